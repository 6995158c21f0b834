"""Voice activity detection: is this 20 ms frame speech?

The endpointer and the transcriber's speech gate depend only on
:class:`VoiceActivityDetector`, so the detector can be swapped (webrtcvad today; a
Silero model through onnxruntime later) without touching them.
"""
from __future__ import annotations

import numpy as np

from models.audio import FRAME_BYTES, SAMPLE_RATE, AudioFrame


class VoiceActivityDetector:
    """Decides, frame by frame, whether the caller is speaking.

    Implementations may keep state between frames (smoothing, recurrent models), so
    use one instance per audio stream and call :meth:`reset` between streams.
    """

    def is_speech(self, frame: AudioFrame) -> bool:
        raise NotImplementedError

    def reset(self) -> None:
        """Forget any state carried from earlier frames (default: stateless)."""


class WebRtcVad(VoiceActivityDetector):
    """The WebRTC GMM voice detector (PyPI ``webrtcvad-wheels``).

    ``aggressiveness`` 0–3: higher rejects more non-speech (and more quiet speech).
    2 suits telephone audio: line noise and hold music at 0–1 count as speech.

    ``min_level_dbfs``: frames quieter than this (RMS, dB full scale) are never speech.
    webrtcvad adapts to the noise floor over its first frames and, until it has, calls
    faint steady hiss speech; telephone speech sits well above -50 dBFS.
    Cheap (~25 µs a frame), so it runs inline on the media path.
    """

    def __init__(self, aggressiveness: int = 2, *, min_level_dbfs: float | None = -50.0) -> None:
        if aggressiveness not in (0, 1, 2, 3):
            raise ValueError(f"aggressiveness must be 0, 1, 2 or 3, got {aggressiveness!r}")
        import webrtcvad  # lazy: keeps ``import models.vad`` light

        self.aggressiveness = aggressiveness
        self.min_level_dbfs = min_level_dbfs
        # Compare mean squares, not dB: no log per frame.
        self._min_mean_square = None if min_level_dbfs is None else (32768.0 * 10 ** (min_level_dbfs / 20)) ** 2
        self._vad = webrtcvad.Vad(aggressiveness)

    def is_speech(self, frame: AudioFrame) -> bool:
        if len(frame.pcm) != FRAME_BYTES:
            raise ValueError(f"expected a {FRAME_BYTES}-byte frame (20 ms at 16 kHz), got {len(frame.pcm)}")
        if self._min_mean_square is not None:
            samples = np.frombuffer(frame.pcm, dtype="<i2").astype(np.float32)
            if float(np.dot(samples, samples)) / len(samples) < self._min_mean_square:
                return False
        return self._vad.is_speech(frame.pcm, SAMPLE_RATE)

    def reset(self) -> None:
        import webrtcvad

        self._vad = webrtcvad.Vad(self.aggressiveness)

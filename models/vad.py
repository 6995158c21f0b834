"""Voice activity detection: is this 20 ms frame speech, and how much of a clip is?

The endpointer and the speech gates (:func:`speech_extent`) depend only on
:class:`VoiceActivityDetector`, so the detector can be swapped (webrtcvad today; a
Silero model through onnxruntime later) without touching them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.audio import FRAME_BYTES, FRAME_MS, SAMPLE_RATE, AudioFrame


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
        # Compare a frame's sum of squares, not its dB: no log or division per frame.
        self._min_sum_square = (
            None if min_level_dbfs is None else (32768.0 * 10 ** (min_level_dbfs / 20)) ** 2 * (FRAME_BYTES // 2)
        )
        self._vad = webrtcvad.Vad(aggressiveness)

    def is_speech(self, frame: AudioFrame) -> bool:
        if len(frame.pcm) != FRAME_BYTES:
            raise ValueError(f"expected a {FRAME_BYTES}-byte frame (20 ms at 16 kHz), got {len(frame.pcm)}")
        if self._min_sum_square is not None:
            # Integers: a float dot product goes to BLAS, whose call costs more than the sum itself.
            samples = np.frombuffer(frame.pcm, dtype="<i2").astype(np.int64)
            if int(samples @ samples) < self._min_sum_square:
                return False
        return self._vad.is_speech(frame.pcm, SAMPLE_RATE)

    def reset(self) -> None:
        import webrtcvad

        self._vad = webrtcvad.Vad(self.aggressiveness)


@dataclass(frozen=True, slots=True)
class SpeechExtent:
    """How much of a clip is speech, in milliseconds from the clip's first sample.

    ``voiced_ms``: all the frames the detector called speech; ``end_ms``: the end of the
    last of them (0 when there is none).
    """

    voiced_ms: int
    end_ms: int


def speech_extent(pcm: bytes, vad: VoiceActivityDetector) -> SpeechExtent:
    """Run ``vad`` over every whole 20 ms frame of ``pcm`` (16 kHz PCM16), in order.

    For a clip whose speech nobody has measured yet (a WAV file, a short answer); audio
    from the endpointer already comes with where its speech ends. A final partial frame
    is skipped, not zero-padded: padding would make a frame the detector never heard.
    Give a fresh ``vad`` per clip: detectors may carry state from earlier audio.
    """
    voiced, end_ms = 0, 0
    for index in range(len(pcm) // FRAME_BYTES):
        frame = AudioFrame(pcm=pcm[index * FRAME_BYTES : (index + 1) * FRAME_BYTES], index=index)
        if vad.is_speech(frame):
            voiced += 1
            end_ms = frame.end_ms
    return SpeechExtent(voiced_ms=voiced * FRAME_MS, end_ms=end_ms)

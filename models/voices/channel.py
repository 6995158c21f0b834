"""The phone line between a caller and the gateway: 16 kHz audio through a SIP codec and back.

* ``pcmu`` (G.711 µ-law) and ``pcma`` (G.711 A-law): narrowband, resampled to 8 kHz (the 4 kHz
  band of a phone call) and companded to 8 bits, then back to 16 kHz — what Whisper hears from
  most calls.
* ``g722``: wideband ADPCM at 16 kHz (64 kbit/s, ~7 kHz band), what HD-voice phones send.

All three run in-process through PyAV's libavcodec (PyAV is already here for faster-whisper's
decoder), so the channel needs neither sox nor an ffmpeg program, and G.722 is exercised offline,
not only through real SIP calls.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from models.audio import SAMPLE_RATE, float32_to_pcm16, pcm16_to_float32

Codec = Literal["pcmu", "pcma", "g722"]
CODECS: tuple[Codec, ...] = ("pcmu", "pcma", "g722")
# libavcodec's name for each codec, and the rate it is sampled at on the wire.
_AV_CODECS: dict[str, tuple[str, int]] = {"pcmu": ("pcm_mulaw", 8000), "pcma": ("pcm_alaw", 8000), "g722": ("g722", 16000)}


@dataclass(frozen=True, slots=True)
class PhoneChannel:
    """``channel(audio_16k) -> audio_16k`` as heard through ``codec``; same length, float32."""

    codec: Codec = "pcmu"

    def __post_init__(self) -> None:
        if self.codec not in _AV_CODECS:
            raise ValueError(f"unknown codec {self.codec!r} (known: {', '.join(CODECS)})")

    @property
    def name(self) -> str:
        return self.codec

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        import av  # lazy: heavy, and only the tools that simulate a line need it

        codec, rate = _AV_CODECS[self.codec]
        pcm = np.frombuffer(float32_to_pcm16(audio), dtype="<i2").reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        encoder = av.CodecContext.create(codec, "w")
        encoder.sample_rate, encoder.format, encoder.layout = rate, "s16", "mono"
        decoder = av.CodecContext.create(codec, "r")
        decoder.sample_rate, decoder.layout = rate, "mono"
        to_wire = av.AudioResampler(format="s16", layout="mono", rate=rate)
        from_wire = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)

        wire_frames = [*to_wire.resample(frame), *to_wire.resample(None)]
        packets = [p for f in wire_frames for p in encoder.encode(f)] + list(encoder.encode(None))
        heard = []
        for packet in packets:
            for decoded in decoder.decode(packet):
                decoded.pts = None  # the resampler would otherwise fill "gaps" it thinks it sees
                heard += [f.to_ndarray() for f in from_wire.resample(decoded)]
        heard += [f.to_ndarray() for f in from_wire.resample(None)]
        out = pcm16_to_float32(np.concatenate(heard, axis=1).astype("<i2").tobytes()) if heard else np.zeros(0, np.float32)
        # Resampling may add or drop a few samples at the ends; the caller's timing should not move.
        return np.pad(out, (0, max(0, len(audio) - len(out))))[: len(audio)]

"""The audio frame shared by ``sip/`` and ``models/``, and small PCM helpers.

Every frame in Puente is 20 ms of 16 kHz, 16-bit little-endian, mono PCM.
Keep this module dependency-light: ``sip/`` imports it on the SIP thread.
"""
from __future__ import annotations

from dataclasses import dataclass

SAMPLE_RATE = 16_000
FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000  # 320
FRAME_BYTES = FRAME_SAMPLES * 2  # 640


@dataclass(frozen=True, slots=True)
class AudioFrame:
    """20 ms of caller audio.

    ``index`` counts frames from the start of the call's media (0, 1, 2…), so
    ``index * FRAME_MS`` is the frame's start in milliseconds of call audio time;
    endpointing is computed on this clock, not on wall time, which makes it
    frame-exact and reproducible.
    """

    pcm: bytes
    index: int

    @property
    def start_ms(self) -> int:
        return self.index * FRAME_MS

    @property
    def end_ms(self) -> int:
        return (self.index + 1) * FRAME_MS

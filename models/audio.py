"""The audio frame shared by ``sip/`` and ``models/``, and small PCM helpers.

Every frame in Puente is 20 ms of 16 kHz, 16-bit little-endian, mono PCM.
Keep this module dependency-light: ``sip/`` imports it on the SIP thread.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy only for annotations; imported lazily at call time
    import numpy as np

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


def frames_from_pcm(pcm: bytes, start_index: int = 0) -> Iterator[AudioFrame]:
    """Cut 16 kHz PCM16 into consecutive 20 ms frames, numbered from ``start_index``.

    A final partial frame is zero-padded rather than dropped, so no caller audio is lost.
    """
    if len(pcm) % 2:
        raise ValueError(f"PCM16 needs an even number of bytes, got {len(pcm)}")
    for n, offset in enumerate(range(0, len(pcm), FRAME_BYTES)):
        chunk = pcm[offset : offset + FRAME_BYTES]
        if len(chunk) < FRAME_BYTES:
            chunk = chunk + bytes(FRAME_BYTES - len(chunk))
        yield AudioFrame(pcm=chunk, index=start_index + n)


def pcm16_to_float32(pcm: bytes) -> "np.ndarray":
    """PCM16 little-endian bytes → float32 samples in [-1, 1) (what Whisper eats)."""
    import numpy as np  # lazy: keep this module cheap to import on the SIP thread

    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


def float32_to_pcm16(audio: "np.ndarray") -> bytes:
    """float32 samples in [-1, 1] → PCM16 little-endian bytes (clipped, not wrapped)."""
    import numpy as np

    clipped = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 32767 / 32768)
    return (np.round(clipped * 32768.0)).astype("<i2").tobytes()


def as_float32(audio: "np.ndarray | bytes") -> "np.ndarray":
    """Mono 16 kHz audio, given as float32 samples or PCM16 bytes, as float32 samples."""
    import numpy as np

    samples = pcm16_to_float32(audio) if isinstance(audio, (bytes, bytearray, memoryview)) else (
        np.asarray(audio, dtype=np.float32))
    if samples.ndim != 1:
        raise ValueError(f"expected mono audio (1-D), got shape {samples.shape}")
    return samples


def as_pcm16(audio: "np.ndarray | bytes") -> bytes:
    """The same audio as PCM16 bytes (what the VAD reads); bytes pass through unconverted."""
    return bytes(audio) if isinstance(audio, (bytes, bytearray, memoryview)) else float32_to_pcm16(audio)


def load_audio(path: str | Path) -> "np.ndarray":
    """Decode any audio file (WAV, FLAC, 8 kHz telephony…) to float32 mono 16 kHz.

    Uses faster-whisper's PyAV decoder, imported lazily because it is heavy.
    """
    from faster_whisper import decode_audio

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file not found: {path}")
    return decode_audio(str(path), sampling_rate=SAMPLE_RATE)

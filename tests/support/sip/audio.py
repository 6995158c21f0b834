"""Measuring speech in WAV files the same way the UAS harness measures frames."""
from __future__ import annotations

import array
import math
import wave
from pathlib import Path

from tests.support.sip.uas import SPEECH_RMS

SOUNDS = Path("/usr/share/asterisk/sounds/en")


def speech_seconds(path: Path, frame_ms: int = 20) -> float:
    """Seconds of 20 ms frames above the harness's speech RMS threshold."""
    with wave.open(str(path), "rb") as w:
        assert w.getsampwidth() == 2 and w.getnchannels() == 1, f"{path}: need 16-bit mono"
        rate = w.getframerate()
        samples = array.array("h", w.readframes(w.getnframes()))
    step = rate * frame_ms // 1000
    loud = 0
    for start in range(0, len(samples) - step + 1, step):
        chunk = samples[start:start + step]
        if math.sqrt(sum(s * s for s in chunk) / step) > SPEECH_RMS:
            loud += 1
    return loud * frame_ms / 1000


def duration_seconds(path: Path) -> float:
    with wave.open(str(path), "rb") as w:
        return w.getnframes() / w.getframerate()

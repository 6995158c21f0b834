"""A call's received audio is collected by AudioTaps: on Puente's pjsua2 build through the
native FrameTap (no Python on the media clock thread), exactly as the bridge delivered it.

Each case runs ``tests/support/sip/tap_probe.py`` in its own process (one Endpoint per process):
a WAV is played through the conference bridge into a tap, and what the tap handed on is compared
with the WAV byte for byte.
"""
from __future__ import annotations

import json
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from sip.capabilities import pjsua2_build
from tests.support.sip.harness import ROOT

pytestmark = pytest.mark.sip

PROBE = ROOT / "tests" / "support" / "sip" / "tap_probe.py"


def noise_wav(path: Path, seconds: float) -> Path:
    """16 kHz mono PCM16 noise with no silent frame (a silent one would hide misalignment)."""
    rng = np.random.default_rng(7)
    samples = rng.integers(1000, 12000, int(16000 * seconds)) * rng.choice([-1, 1], int(16000 * seconds))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(samples.astype("<i2").tobytes())
    return path


def probe(wav: Path, *args: str) -> dict:
    proc = subprocess.run([sys.executable, str(PROBE), str(wav), *args], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def native() -> bool:
    return pjsua2_build().frame_tap


def test_audio_arrives_bit_exact_and_in_order(tmp_path, native) -> None:
    result = probe(noise_wav(tmp_path / "noise.wav", 2.0))

    assert result["native"] is native
    assert result["received_sha256"] == result["wav_sha256"]
    assert result["gaps"] == 0 and result["dropped"] == 0
    assert result["frames"] >= 100  # 2 s of 20 ms frames, plus the silence after the player ended


def test_a_stalled_reader_loses_only_the_oldest_audio_and_the_index_says_so(tmp_path, native) -> None:
    if not native:
        pytest.skip("this pjsua2 build has no FrameTap: frames are pushed from the media thread, never buffered")
    result = probe(noise_wav(tmp_path / "noise.wav", 1.5), "--stall-s", "3.0")

    # Three seconds without a drain overflow the two-second ring: the oldest second is dropped,
    # the index jumps over it, and everything after is delivered in order.
    assert result["dropped"] == pytest.approx(50, abs=10)
    assert result["gaps"] == 1 and result["increasing"]

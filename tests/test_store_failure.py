"""A full disk under the context store: the caller is still served in voice, never dropped,
and recording resumes once there is space again. Uses a real full filesystem (a small tmpfs)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, espeak

from gateway.dev.harness import start_gateway

pytestmark = [pytest.mark.sip, pytest.mark.asr]


@pytest.fixture
def small_disk(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True)  # stops at ENOSPC
    return filler


def call(gateway, wav: Path, number: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "call", gateway.uri("en"), "--wav", str(wav), "--api", gateway.api,
         "--from", number, "--dtmf", "1", "--timeout", "40"],
        capture_output=True, text=True, timeout=90, cwd=ROOT,
    )


def test_a_full_disk_keeps_the_caller_in_voice_and_recording_resumes_after(small_disk, tmp_path):
    gateway = start_gateway(tmp_path, database={"url": f"sqlite:///{small_disk / 'puente.db'}"})
    wav = espeak("Hi, I would like to know where my order is", "en", tmp_path / "order.wav")
    try:
        filler = fill(small_disk)
        unrecorded = call(gateway, wav, "+14155554001")
        log = gateway.log_path.read_text()
        assert "context store failed, the call continues unrecorded" in log, log[-2000:]
        assert "hanging up" not in log  # not dropped with a 500
        # The caller was answered and served (hold, then goodbye), though nothing could be stored.
        assert unrecorded.returncode == 1 and "no ended record" in unrecorded.stdout, unrecorded.stdout
        health = gateway.get("/healthz")
        assert health["status"] == "degraded", health
        assert health["database"]["unrecorded_calls"] == 1 and "full" in health["database"]["last_failure"]

        filler.unlink()
        recorded = call(gateway, wav, "+14155554002")
        assert recorded.returncode == 0, recorded.stdout + recorded.stderr
        assert '"route": "whatsapp"' in recorded.stdout
    finally:
        gateway.stop()

"""Shared fixtures: a real gateway process on free loopback ports, and real test calls against it."""
from __future__ import annotations

from pathlib import Path

import pytest

from gateway.calling import synthesize
from gateway.testing import ROOT, RunningGateway, start_gateway

SHARED_DATA = ROOT.parent / "shared" / "data"
SOUNDS = Path("/usr/share/asterisk/sounds")


@pytest.fixture(scope="session")
def gateway(tmp_path_factory) -> RunningGateway:
    running = start_gateway(tmp_path_factory.mktemp("gateway"))
    yield running
    running.stop()


def require(path: Path, why: str) -> Path:
    if not path.exists():
        pytest.skip(f"{why}: {path} is absent")
    return path


espeak = synthesize

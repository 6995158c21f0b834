"""Shared fixtures: a real gateway process on free loopback ports, and real test calls against it."""
from __future__ import annotations

from pathlib import Path

import pytest

from gateway.dev.caller import synthesize as espeak  # noqa: F401  (re-exported for the tests)
from gateway.dev.harness import ROOT, RunningGateway, start_gateway  # noqa: F401
from gateway.store import Store
from models.errors import ModelNotFoundError
from models.transcribe import Transcriber, TranscriberConfig


@pytest.fixture(scope="session")
def gateway(tmp_path_factory) -> RunningGateway:
    running = start_gateway(tmp_path_factory.mktemp("gateway"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory) -> Path:
    """A store with its tables and nothing else, to copy for each test (creating the schema is most of a
    fast test's time)."""
    path = tmp_path_factory.mktemp("schema") / "puente.db"
    Store(f"sqlite:///{path}").close()
    return path


@pytest.fixture(scope="session")
def transcriber(tmp_path_factory) -> Transcriber:
    """The one Whisper base model of the test session, joined into a fresh cache (so the
    registry's assembly from the two PyPI parts runs in every test session)."""
    try:
        return Transcriber(TranscriberConfig(model="base", cache_dir=tmp_path_factory.mktemp("models")))
    except ModelNotFoundError as e:
        pytest.skip(f"Whisper base not installed: {e}")

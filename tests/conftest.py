"""Shared fixtures: a real gateway process on free loopback ports, and real test calls against it."""
from __future__ import annotations

import pytest

from gateway.calling import synthesize as espeak  # noqa: F401  (re-exported for the tests)
from gateway.testing import ROOT, RunningGateway, start_gateway  # noqa: F401


@pytest.fixture(scope="session")
def gateway(tmp_path_factory) -> RunningGateway:
    running = start_gateway(tmp_path_factory.mktemp("gateway"))
    yield running
    running.stop()

"""Fixtures of the backend tests: the fault server, and real servers started once per module."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fault_server import FaultServer


@pytest.fixture
def fault_server():
    """Factory: ``fault_server(rates=..., **kw)`` -> a started FaultServer, stopped after the test."""
    started: list[FaultServer] = []

    def make(**kw) -> FaultServer:
        srv = FaultServer(**kw).start()
        started.append(srv)
        return srv

    yield make
    for s in started:
        s.stop()

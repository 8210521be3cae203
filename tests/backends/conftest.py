"""Fixtures of the backend tests: the fault-injecting stub server (``tests.support.StubServer``)."""

from __future__ import annotations

import pytest

from tests.support import StubServer


@pytest.fixture
def fault_server():
    """Factory: ``fault_server(rates=..., **kw)`` -> a started StubServer, stopped after the test."""
    started: list[StubServer] = []

    def make(**kw) -> StubServer:
        srv = StubServer(model_id="fault-model", **kw).start()
        started.append(srv)
        return srv

    yield make
    for s in started:
        s.stop()

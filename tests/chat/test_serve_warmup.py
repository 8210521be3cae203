"""`serve` warms an in-process model up before `/health` says ready: 503 "warming up" while the first
generation runs, 200 "ok" after; remote backends are not warmed (it would be a paid call)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from sage_dialog.backends import ChatRequest, ChatResult, load_backend
from sage_dialog.backends.ledger import Ledger
from sage_dialog.backends.mock import MockBackend
from sage_dialog.interact.serve import create_app
from tests.support import serve_app


def _health(base: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


class Gated(MockBackend):
    """A scripted model whose generation waits until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__(label="gated", outputs=["hi"])
        self.gate = threading.Event()
        self.calls = 0

    async def generate(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        self.calls += 1
        await asyncio.to_thread(self.gate.wait, 30)
        return await super().generate(requests)


def _until(pred: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_health_is_503_until_the_warm_up_generation_is_done() -> None:
    backend = Gated()
    with serve_app(create_app(backend, warmup=True)) as base:
        try:
            _until(lambda: backend.calls == 1)  # the warm-up generation started by itself
            code, body = _health(base)
            assert code == 503 and body["status"] == "warming up"
            backend.gate.set()
            _until(lambda: _health(base)[0] == 200)
            assert _health(base)[1]["status"] == "ok" and backend.calls == 1
        finally:
            backend.gate.set()


def test_a_scripted_or_remote_backend_is_not_warmed() -> None:
    backend = Gated()
    with serve_app(create_app(backend)) as base:  # provider mock: not an in-process model
        assert _health(base) == (200, {"status": "ok", "model": backend.name}) and backend.calls == 0


@pytest.mark.parametrize("system", [None, "You are kind."])
def test_an_hf_model_has_generated_once_when_health_says_ok(tiny_model: Path, system: str | None) -> None:
    ledger = Ledger("serve")
    backend = ledger.track(load_backend(f"hf:{tiny_model}"))
    with serve_app(create_app(backend, system_prompt=system)) as base:
        _until(lambda: _health(base)[0] == 200)
        assert ledger.usage[backend.name].requests == 1  # the warm-up, before any client asked

"""`serve` warms an in-process model up before `/health` says ready: 503 "warming up" while the first
generation runs, 200 "ok" after; remote backends are not warmed (it would be a paid call)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from sage_dialog.backends import ChatRequest, ChatResult, load_backend
from sage_dialog.backends.ledger import Ledger
from sage_dialog.backends.mock import MockBackend
from sage_dialog.interact.serve import create_app


def _start(app: Any) -> Iterator[str]:
    """Run ``app`` with uvicorn on a free loopback port; yields the base URL, stops on the next step."""
    import socket

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started:
        assert time.time() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


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
    gen: Iterator[str] = _start(create_app(backend, warmup=True))
    base = next(gen)
    try:
        _until(lambda: backend.calls == 1)  # the warm-up generation started by itself
        code, body = _health(base)
        assert code == 503 and body["status"] == "warming up"
        backend.gate.set()
        _until(lambda: _health(base)[0] == 200)
        assert _health(base)[1]["status"] == "ok" and backend.calls == 1
    finally:
        backend.gate.set()
        next(gen, None)


def test_a_scripted_or_remote_backend_is_not_warmed() -> None:
    backend = Gated()
    gen = _start(create_app(backend))  # provider mock: not an in-process model
    base = next(gen)
    try:
        assert _health(base) == (200, {"status": "ok", "model": backend.name}) and backend.calls == 0
    finally:
        next(gen, None)


@pytest.mark.parametrize("system", [None, "You are kind."])
def test_an_hf_model_has_generated_once_when_health_says_ok(tiny_model: Path, system: str | None) -> None:
    ledger = Ledger("serve")
    backend = ledger.track(load_backend(f"hf:{tiny_model}"))
    gen = _start(create_app(backend, system_prompt=system))
    base = next(gen)
    try:
        _until(lambda: _health(base)[0] == 200)
        assert ledger.usage[backend.name].requests == 1  # the warm-up, before any client asked
    finally:
        next(gen, None)

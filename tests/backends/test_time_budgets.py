"""Time bounds of the ``openai:`` backend against a real slow server on 127.0.0.1 (issue 28).

``timeout_s`` is the whole of one attempt, so a server that drips one byte at a time (each read
succeeds, so httpx's per-read timeout never fires) cannot hold a request past it; ``retry_budget_s``
bounds a request's attempts and waits together, so a ``Retry-After: 100000`` ends it at once.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from sage_dialog.backends import BackendError, ChatRequest, SamplingParams
from sage_dialog.backends.openai_backend import OpenAIBackend


def _req() -> ChatRequest:
    return ChatRequest([{"role": "user", "content": "hello"}], n=1, sampling=SamplingParams(max_tokens=8))


def test_dripping_server_is_cut_at_timeout_s(fault_server):
    srv = fault_server(drip_s=0.3)  # a ~300-byte reply would take ~90 s
    b = OpenAIBackend("m", base_url=srv.url, timeout_s=1.0, max_retries=1, backoff_base_s=0.01, backoff_max_s=0.02)
    t0 = time.monotonic()
    with pytest.raises(BackendError) as e:
        asyncio.run(b.generate([_req()]))
    elapsed = time.monotonic() - t0
    assert e.value.kind == "timeout"
    assert "no whole reply within timeout_s=1" in str(e.value)
    assert elapsed < 2 * 1.0 + 3.0  # two attempts of 1 s, and slack for a loaded machine; not ~90 s


def test_dripping_stream_is_cut_at_timeout_s(fault_server):
    srv = fault_server(drip_s=0.3)
    b = OpenAIBackend("m", base_url=srv.url, timeout_s=1.0, max_retries=0, stream=True)
    t0 = time.monotonic()
    with pytest.raises(BackendError) as e:
        asyncio.run(b.generate([_req()]))
    assert e.value.kind == "timeout"
    assert time.monotonic() - t0 < 1.0 + 3.0


def test_retry_after_beyond_the_budget_fails_at_once(fault_server):
    srv = fault_server(rates={"429": 1.0}, retry_after="100000")
    b = OpenAIBackend("m", base_url=srv.url, timeout_s=5.0, max_retries=6, retry_budget_s=10.0)
    t0 = time.monotonic()
    with pytest.raises(BackendError) as e:
        asyncio.run(b.generate([_req()]))
    assert e.value.kind == "rate_limited"
    assert "would pass retry_budget_s=10" in str(e.value)
    assert srv.counts["429"] == 1  # the capped 120 s wait was not started
    assert time.monotonic() - t0 < 5.0


def test_retries_stop_when_the_budget_is_spent(fault_server):
    srv = fault_server(rates={"429": 1.0}, retry_after="0.3")
    b = OpenAIBackend("m", base_url=srv.url, timeout_s=5.0, max_retries=100, retry_budget_s=1.0)
    t0 = time.monotonic()
    with pytest.raises(BackendError) as e:
        asyncio.run(b.generate([_req()]))
    assert "retry_budget_s=1" in str(e.value)
    assert 2 <= srv.counts["429"] <= 5  # ~1 s of 0.3 s waits, not 101 attempts
    assert time.monotonic() - t0 < 1.0 + 3.0

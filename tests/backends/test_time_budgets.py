"""Time bounds of the ``openai:`` backend against a real slow server on 127.0.0.1 (issue 28).

``timeout_s`` is the whole of one attempt, so a server that drips one byte at a time (each read
succeeds, so httpx's per-read timeout never fires) cannot hold a request past it; ``retry_budget_s``
bounds a request's attempts and waits together, so a ``Retry-After: 100000`` ends it at once.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sage_dialog.backends import BackendError, ChatRequest, SamplingParams
from sage_dialog.backends.openai_backend import OpenAIBackend

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _req() -> ChatRequest:
    return ChatRequest([{"role": "user", "content": "hello"}], n=1, sampling=SamplingParams(max_tokens=8))


def test_dripping_server_is_cut_at_timeout_s(fault_server):
    srv = fault_server(drip_s=0.3)  # a ~300-byte reply would take ~90 s
    b = OpenAIBackend("m", base_url=srv.base_url, timeout_s=1.0, max_retries=1, backoff_base_s=0.01, backoff_max_s=0.02)
    t0 = time.monotonic()
    with pytest.raises(BackendError) as e:
        asyncio.run(b.generate([_req()]))
    elapsed = time.monotonic() - t0
    assert e.value.kind == "timeout"
    assert "no whole reply within timeout_s=1" in str(e.value)
    assert elapsed < 20  # two attempts of 1 s and slack for a loaded machine (load 20 on 2 cores); not ~90 s


def test_dripping_stream_is_cut_at_timeout_s(fault_server):
    srv = fault_server(drip_s=0.3)
    b = OpenAIBackend("m", base_url=srv.base_url, timeout_s=1.0, max_retries=0, stream=True)
    t0 = time.monotonic()
    with pytest.raises(BackendError) as e:
        asyncio.run(b.generate([_req()]))
    assert e.value.kind == "timeout"
    assert time.monotonic() - t0 < 15  # one 1 s attempt; the stream alone would take ~10 s more


def test_retry_after_beyond_the_budget_fails_at_once(fault_server):
    srv = fault_server(rates={"429": 1.0}, retry_after="100000")
    b = OpenAIBackend("m", base_url=srv.base_url, timeout_s=5.0, max_retries=6, retry_budget_s=10.0)
    t0 = time.monotonic()
    with pytest.raises(BackendError) as e:
        asyncio.run(b.generate([_req()]))
    assert e.value.kind == "rate_limited"
    assert "would pass retry_budget_s=10" in str(e.value)
    assert srv.counts["429"] == 1  # the capped 120 s wait was not started
    assert time.monotonic() - t0 < 15


def test_retries_stop_when_the_budget_is_spent(fault_server):
    srv = fault_server(rates={"429": 1.0}, retry_after="0.3")
    b = OpenAIBackend("m", base_url=srv.base_url, timeout_s=5.0, max_retries=100, retry_budget_s=2.0)
    t0 = time.monotonic()
    with pytest.raises(BackendError) as e:
        asyncio.run(b.generate([_req()]))
    assert "retry_budget_s=2" in str(e.value)
    assert 2 <= srv.counts["429"] <= 8  # ~2 s of 0.3 s waits, not 101 attempts
    assert time.monotonic() - t0 < 15


def _cli(args: list[str], cwd: Path, timeout: float) -> tuple[int, str, float]:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "sage_dialog", *args], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=timeout, check=False)
    return res.returncode, res.stderr, time.monotonic() - t0


DIALOG = ('{"kind": "dialog", "id": "d1", "turns": [{"role": "user", "text": "I failed my exam."}, '
          '{"role": "assistant", "text": "That is hard. Want to talk?"}]}\n')


@pytest.mark.parametrize("fault", ["drip", "retry_after"])
def test_the_cli_ends_a_slow_or_rate_limited_server_within_its_budget(fault_server, tmp_path: Path, fault: str):
    """Through the real CLI: `annotate` against a dripping server (timeout_s=2) or one that answers
    429 with Retry-After: 100000 (retry_budget_s=5) gives up in seconds; the dialog goes to the
    rejects file with the typed error (annotate keeps going past a failed dialog by design)."""
    srv = fault_server(drip_s=0.5) if fault == "drip" else fault_server(rates={"429": 1.0}, retry_after="100000")
    (tmp_path / "d.jsonl").write_text(DIALOG)
    code, err, took = _cli(["annotate", "d.jsonl", "-o", "out.jsonl", "--annotator", "openai:m",
                            "--backend-option", f"base_url={srv.base_url}", "--backend-option", "timeout_s=2",
                            "--backend-option", "max_retries=1", "--backend-option", "retry_budget_s=5",
                            "--backend-option", "backoff_base_s=0.01"], tmp_path, timeout=120)
    assert code == 0, err
    assert "Traceback" not in err
    assert "rejected 1 {'backend_error': 1}" in err + _cli_out(tmp_path)
    rejects = (tmp_path / "out.rejects.jsonl").read_text()
    assert ("timeout_s=2" if fault == "drip" else "retry_budget_s=5") in rejects, rejects
    assert took < 30  # two 2 s attempts (or no wait at all), CLI start-up and a loaded machine; not 75 s / 36 min


def _cli_out(tmp_path: Path) -> str:
    summary = tmp_path / "out.summary.json"
    return summary.read_text() if summary.exists() else ""

"""OpenAIBackend against the project's own fault-injection server: retries, typed errors, fan-out."""

from __future__ import annotations

import asyncio
import time

import pytest

from sage_dialog.backends import BackendError, ChatRequest, SamplingParams, ScoreRequest, ScoringUnsupported
from sage_dialog.backends.ledger import Ledger
from sage_dialog.backends.openai_backend import OpenAIBackend, _retry_after

FAST = {"backoff_base_s": 0.01, "backoff_max_s": 0.05, "timeout_s": 0.5}


def req(i: int = 0, n: int = 1, **sp) -> ChatRequest:
    return ChatRequest(
        [{"role": "user", "content": f"hello {i}"}], n=n, sampling=SamplingParams(max_tokens=8, **sp)
    )


def test_thousand_requests_at_30_percent_faults_nothing_dropped(fault_server):
    rates = dict.fromkeys(("429", "500", "timeout", "malformed", "truncated"), 0.06)
    srv = fault_server(rates=rates, seed=1, hang_s=6.0)
    ledger = Ledger("faults")
    # a client timeout (a whole attempt) well above a loaded machine's reply time, so only injected hangs time out
    b = OpenAIBackend(
        "fault-model", base_url=srv.base_url, concurrency=64, max_retries=3, on_error="return", **{**FAST, "timeout_s": 4.0}
    )
    metered = ledger.track(b)
    t0 = time.time()
    res = asyncio.run(metered.generate([req(i) for i in range(1000)]))
    elapsed = time.time() - t0
    comps = [c for r in res for c in r.completions]
    assert len(res) == 1000 and len(comps) == 1000
    ok = [c for c in comps if c.finish_reason != "error"]
    bad = [c for c in comps if c.finish_reason == "error"]
    # every reply the server gave successfully reached exactly one caller
    assert len(ok) == srv.counts["ok"]
    assert all(c.text for c in ok)
    # failures are typed and counted, in the backend and in the ledger
    kinds = {c.error.partition(":")[0] for c in bad}
    assert kinds <= {"rate_limited", "server_error", "timeout", "malformed", "connection"}
    assert sum(b.error_counts.values()) == len(bad)
    u = ledger.to_dict()["backends"][b.name]
    assert u["errors"] == len(bad) and u["samples"] == 1000
    # ~30% of ~1,400 attempts failed, and 4 attempts each leave ~1% of requests failed for good
    faults = sum(srv.counts[k] for k in rates)
    assert 0.2 < faults / sum(srv.counts.values()) < 0.4
    assert len(bad) < 40
    # every injected fault was retried unless it was a request's last attempt; a few more retries
    # are connection errors on keep-alive sockets the server had closed (it never saw those)
    assert b.retries >= faults - len(bad)
    assert elapsed < 120


def test_raise_mode_gives_typed_error_after_retries(fault_server):
    srv = fault_server(rates={"500": 1.0})
    b = OpenAIBackend("m", base_url=srv.base_url, max_retries=2, **FAST)
    with pytest.raises(BackendError) as e:
        asyncio.run(b.generate([req()]))
    assert e.value.kind == "server_error"
    assert sum(srv.counts.values()) == 3


def test_bad_request_is_not_retried(fault_server):
    srv = fault_server(rates={"400": 1.0})
    b = OpenAIBackend("m", base_url=srv.base_url, max_retries=3, **FAST)
    with pytest.raises(BackendError) as e:
        asyncio.run(b.generate([req()]))
    assert e.value.kind == "bad_request" and "unknown field" in str(e.value)
    assert sum(srv.counts.values()) == 1


def test_retry_after_is_honoured(fault_server):
    srv = fault_server(rates={"429": 0.5}, seed=3, retry_after="0.4")
    b = OpenAIBackend("m", base_url=srv.base_url, max_retries=8, **FAST)
    t0 = time.time()
    asyncio.run(b.generate([req(i) for i in range(6)]))
    assert srv.counts["429"] >= 1
    assert time.time() - t0 >= 0.4
    assert _retry_after({"retry-after": "2"}) == 2.0
    assert _retry_after({"retry-after-ms": "150"}) == 0.15
    assert _retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0


def test_n_is_fanned_out_when_the_server_ignores_it(fault_server):
    srv = fault_server(ignore_n=True)
    b = OpenAIBackend("m", base_url=srv.base_url, **FAST)
    [r] = asyncio.run(b.generate([req(n=4, temperature=1.0)]))
    assert len(r.completions) == 4 and b.native_n is False
    assert sum(srv.counts.values()) == 4  # one native try (1 choice) + 3 fanned out
    [r] = asyncio.run(b.generate([req(n=3)]))
    assert len(r.completions) == 3 and sum(srv.counts.values()) == 7


def test_native_n_used_when_honoured(fault_server):
    srv = fault_server()
    b = OpenAIBackend("m", base_url=srv.base_url, **FAST)
    [r] = asyncio.run(b.generate([req(n=5)]))
    assert len(set(r.texts)) == 5 and sum(srv.counts.values()) == 1 and b.native_n is True


def test_seeded_samples_fan_out_with_derived_seeds(fault_server):
    srv = fault_server()
    b = OpenAIBackend("m", base_url=srv.base_url, **FAST)
    [a] = asyncio.run(b.generate([req(n=3, seed=7)]))
    assert len(set(a.texts)) == 3
    later = ChatRequest(req().messages, n=1, sampling=SamplingParams(max_tokens=8, seed=7), sample_offset=2)
    [c] = asyncio.run(b.generate([later]))
    assert c.texts == a.texts[2:]


def test_streaming_with_truncated_streams(fault_server):
    srv = fault_server(rates={"truncated": 0.3}, seed=5)
    b = OpenAIBackend("m", base_url=srv.base_url, stream=True, max_retries=10, **FAST)
    res = asyncio.run(b.generate([req(i) for i in range(40)]))
    assert all(len(r.completions) == 1 and r.completions[0].text for r in res)
    assert srv.counts["truncated"] > 0 and b.retries >= srv.counts["truncated"]


def test_load_is_spread_over_base_urls(fault_server):
    a, c = fault_server(delay_s=0.05), fault_server(delay_s=0.05)
    b = OpenAIBackend("m", base_urls=[a.base_url, c.base_url], concurrency=8, **FAST)
    asyncio.run(b.generate([req(i) for i in range(40)]))
    assert a.counts["ok"] + c.counts["ok"] == 40
    assert 12 <= a.counts["ok"] <= 28


def test_scoring_unsupported_is_clear(fault_server):
    srv = fault_server()
    b = OpenAIBackend("m", base_url=srv.base_url, **FAST)
    with pytest.raises(ScoringUnsupported, match="prompt logprobs"):
        asyncio.run(b.score([ScoreRequest(req().messages, ["a", "b"])]))


def test_missing_key_for_openai_is_a_user_error(monkeypatch):
    from sage_dialog.core.errors import UserError

    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(UserError, match="NO_SUCH_KEY_VAR"):
        OpenAIBackend("gpt-x", api_key_env="NO_SUCH_KEY_VAR")

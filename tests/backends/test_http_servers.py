"""The HTTP backend against a real `transformers serve` on 127.0.0.1, and the API-key leak scan."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from sage_dialog.backends import ChatRequest, SamplingParams, ScoreRequest, ScoringUnsupported
from sage_dialog.backends.cache import CachedBackend
from sage_dialog.backends.ledger import Ledger
from sage_dialog.backends.openai_backend import OpenAIBackend
from sage_dialog.backends.servers import port_is_open, transformers_server

MSGS = [{"role": "user", "content": "i failed my exam today"}]


@pytest.fixture(scope="module")
def tserve(tiny_model):
    with transformers_server(tiny_model) as srv:
        yield srv
    assert not port_is_open(srv.port), "server port left open"
    assert srv.proc is None


def backend(srv, tiny_model, **kw) -> OpenAIBackend:
    return OpenAIBackend(srv.model, base_url=srv.base_url, timeout_s=60, max_retries=2, **kw)


@pytest.mark.slow
def test_transformers_serve_n_fanout_prefill_and_no_scoring(tserve, tiny_model):
    b = backend(tserve, tiny_model, concurrency=4)
    sp = SamplingParams(temperature=1.0, max_tokens=8)
    [r] = asyncio.run(b.generate([ChatRequest(MSGS, n=3, sampling=sp)]))
    assert len(r.completions) == 3 and b.native_n is False  # it ignores n: fanned out
    assert r.tokens_in > 0 and all(c.tokens_out > 0 for c in r.completions)
    # prefill through /v1/completions with the prompt rendered here by the model's own template
    pb = backend(tserve, tiny_model, prefill_mode="completions", tokenizer=str(tiny_model))
    [g] = asyncio.run(
        pb.generate(
            [
                ChatRequest(
                    MSGS, n=2, sampling=SamplingParams(temperature=0, max_tokens=6), prefill="{u_motivation:"
                )
            ]
        )
    )
    assert len(g.completions) == 2 and g.completions[0].text == g.completions[1].text  # greedy
    from sage_dialog.backends import load_backend

    hf = load_backend(f"hf:{tiny_model}")
    [ref] = asyncio.run(
        hf.generate(
            [
                ChatRequest(
                    MSGS, n=1, sampling=SamplingParams(temperature=0, max_tokens=6), prefill="{u_motivation:"
                )
            ]
        )
    )
    assert g.completions[0].text.strip() == ref.completions[0].text.strip()
    with pytest.raises(ScoringUnsupported, match="prompt logprobs"):
        asyncio.run(b.score([ScoreRequest(MSGS, ["yes", "no"])]))


@pytest.mark.slow
def test_api_key_never_written_or_logged(
    tserve, tiny_model, tmp_path, caplog, capfd, monkeypatch, fault_server
):
    from sage_dialog.core.io import finish_manifest, new_manifest

    key = "sk-sagetest-LEAKCANARY-7f3a9c1e2b"
    monkeypatch.setenv("SAGE_TEST_API_KEY", key)
    caplog.set_level(logging.DEBUG)
    for name in ("openai", "httpx", "httpcore", "sage_dialog"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    ledger = Ledger("leak-test")
    inner = OpenAIBackend(
        tserve.model, base_url=tserve.base_url, api_key_env="SAGE_TEST_API_KEY", timeout_s=60
    )
    b = ledger.track(CachedBackend(inner, tmp_path / "cache.sqlite"))
    reqs = [ChatRequest(MSGS, n=2, sampling=SamplingParams(max_tokens=4, seed=i)) for i in range(3)]
    asyncio.run(b.generate(reqs))
    asyncio.run(b.generate(reqs))  # from the cache
    # a failing call too: error messages must not carry the key either
    bad = OpenAIBackend(
        tserve.model,
        base_url=f"http://127.0.0.1:{tserve.port}/nope/v1",
        api_key_env="SAGE_TEST_API_KEY",
        max_retries=0,
    )
    with pytest.raises(Exception) as err:
        asyncio.run(bad.generate(reqs[:1]))
    # the key does reach servers (here our fault server, which records the header it got)
    fs = fault_server(rates={"500": 0.3}, seed=2)
    via_fs = ledger.track(
        CachedBackend(
            OpenAIBackend("m", base_url=fs.base_url, api_key_env="SAGE_TEST_API_KEY", backoff_base_s=0.01),
            tmp_path / "cache.sqlite",
        )
    )
    asyncio.run(via_fs.generate(reqs))
    assert f"Bearer {key}" in fs.auth_headers
    ledger.write(tmp_path / "usage.json")
    m = new_manifest(
        "leak-test",
        {"backend": {"spec": f"openai:{tserve.model}", "options": {"api_key_env": "SAGE_TEST_API_KEY"}}},
    )
    summary = {"backend": b.identity(), "wrapper": repr(vars(b)), "inner": repr(vars(inner))}
    finish_manifest(m, tmp_path, usage=ledger.to_dict(), summary=summary)
    out, errtxt = capfd.readouterr()
    texts = {
        "logs": caplog.text + "\n".join(r.getMessage() for r in caplog.records),
        "stdout": out,
        "stderr": errtxt,
        "error": str(err.value) + repr(err.value),
        "server log": tserve.log_path.read_text(errors="replace"),
    }
    files = [p for p in Path(tmp_path).rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"cache.sqlite", "usage.json", "manifest.json"}
    for p in files:
        texts[str(p)] = p.read_bytes().decode("utf-8", errors="replace")
    assert any(
        "HTTP Request" in r.getMessage() or "Request options" in r.getMessage() for r in caplog.records
    ), "debug logs were captured"
    for where_, text in texts.items():
        assert key not in text, f"API key leaked into {where_}"
        assert "LEAKCANARY" not in text, f"part of the API key leaked into {where_}"
    assert os.environ["SAGE_TEST_API_KEY"] == key

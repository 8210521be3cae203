"""Response cache (per-sample keys, concurrent writers, kill-and-resume) and the usage ledger."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from sage_dialog.backends import BackendConfig, ChatRequest, SamplingParams, ScoreRequest, load_backend
from sage_dialog.backends.cache import CachedBackend, ResponseCache, path_fingerprint
from sage_dialog.backends.ledger import Ledger

MSGS = [{"role": "user", "content": "i lost my job today"}]


@pytest.fixture(scope="module")
def hf(tiny_model):
    return load_backend(f"hf:{tiny_model}", batch_size=16)


def test_n4_then_n5_costs_one_sample(hf, tmp_path):
    inner_ledger = Ledger("inner")
    cached = CachedBackend(inner_ledger.track(hf), tmp_path / "c.sqlite")
    sp = SamplingParams(max_tokens=8, seed=11)
    four = asyncio.run(cached.generate([ChatRequest(MSGS, n=4, sampling=sp)]))[0]
    assert inner_ledger.usage[hf.name].samples == 4 and not any(c.cached for c in four.completions)
    five = asyncio.run(cached.generate([ChatRequest(MSGS, n=5, sampling=sp)]))[0]
    assert inner_ledger.usage[hf.name].samples == 5  # exactly one new sample computed
    assert [c.cached for c in five.completions] == [True] * 4 + [False]
    assert five.texts[:4] == four.texts
    # the new sample is the one an uncached n=5 request would have produced
    assert five.texts == asyncio.run(hf.generate([ChatRequest(MSGS, n=5, sampling=sp)]))[0].texts
    assert five.tokens_in == four.tokens_in > 0
    # a different request or sampling setting is a different key
    other = asyncio.run(
        cached.generate([ChatRequest(MSGS, n=1, sampling=SamplingParams(max_tokens=9, seed=11))])
    )[0]
    assert not other.completions[0].cached
    assert cached.hits == 4 and cached.misses == 4 + 1 + 1


def test_scores_are_cached_and_identity_matters(hf, tiny_model, tmp_path):
    cached = CachedBackend(hf, tmp_path / "c.sqlite")
    req = [ScoreRequest(MSGS, ["yes", "no"])]
    a = asyncio.run(cached.score(req))[0]
    b = asyncio.run(cached.score(req))[0]
    assert not a.cached and b.cached and a.logprobs == b.logprobs

    # the same store under another identity (e.g. another adapter) shares nothing
    class Renamed(CachedBackend):
        def identity(self):
            return {**super().identity(), "adapter": "other"}

    other = Renamed(hf, cached.store)
    assert not asyncio.run(other.score(req))[0].cached


def test_load_backend_with_cache_config(tiny_model, tmp_path):
    b = load_backend(BackendConfig(spec=f"hf:{tiny_model}", cache=str(tmp_path / "c.sqlite")))
    assert isinstance(b, CachedBackend)
    r1 = asyncio.run(b.generate([ChatRequest(MSGS, n=2, sampling=SamplingParams(max_tokens=4))]))[0]
    r2 = asyncio.run(b.generate([ChatRequest(MSGS, n=2, sampling=SamplingParams(max_tokens=4))]))[0]
    assert r1.texts == r2.texts and all(c.cached for c in r2.completions)


def test_concurrent_writers_lose_nothing(tmp_path):
    path = tmp_path / "shared.sqlite"
    errors = []

    def writer(w: int) -> None:
        try:
            store = ResponseCache(path)
            for i in range(100):
                store.put_many("gen", [(f"{w}-{i}-{j}", {"v": [w, i, j]}) for j in range(3)])
                assert store.get_many([f"{w}-{i}-0"])[f"{w}-{i}-0"] == {"v": [w, i, 0]}
            store.close()
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(ResponseCache(path)) == 6 * 100 * 3
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_fingerprint_follows_content(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").write_text("{}")
    a = path_fingerprint(d)
    (d / "config.json").write_text('{"x": 1}')
    assert path_fingerprint(d) != a
    assert path_fingerprint("org/some-hub-id") is None


def test_ledger_counts_and_prices(hf, tmp_path):
    ledger = Ledger("demo", prices={"*": {"input": 1.0, "output": 2.0}})
    b = ledger.track(CachedBackend(hf, tmp_path / "c.sqlite"))
    reqs = [ChatRequest(MSGS, n=3, sampling=SamplingParams(max_tokens=5, seed=1))]
    asyncio.run(b.generate(reqs))
    asyncio.run(b.generate(reqs))
    asyncio.run(b.score([ScoreRequest(MSGS, ["a", "b"])]))
    path = ledger.write(tmp_path / "usage.json")
    d = json.loads(path.read_text())
    u = d["backends"][hf.name]
    assert u["requests"] == 2 and u["samples"] == 6 and u["cache_hits"] == 3 and u["score_requests"] == 1
    assert 0 < u["tokens_out"] <= 3 * 6
    assert u["tokens_in"] > 0
    assert u["cost_usd"] == pytest.approx((u["tokens_in"] + 2 * u["tokens_out"]) / 1e6)
    assert d["totals"]["cache_hits"] == 3


WORKER = textwrap.dedent(
    """
    import asyncio, sys
    from sage_dialog.backends import ChatRequest, SamplingParams, load_backend
    from sage_dialog.backends.cache import CachedBackend
    from sage_dialog.backends.ledger import Ledger

    model, cache, out = sys.argv[1:4]
    ledger = Ledger("resume-test")
    b = ledger.track(CachedBackend(load_backend("hf:" + model, batch_size=2, num_threads=1), cache))
    reqs = [ChatRequest([{"role": "user", "content": f"tell me about day {i}"}], n=2,
                        sampling=SamplingParams(max_tokens=48, seed=i)) for i in range(40)]
    res = asyncio.run(b.generate(reqs))
    assert all(len(r.completions) == 2 for r in res)
    ledger.write(out)
    """
)


@pytest.mark.slow
def test_killed_run_resumes_from_cache(tiny_model, tmp_path):
    cache = tmp_path / "cache.sqlite"
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    cmd = [sys.executable, str(script), str(tiny_model), str(cache), str(tmp_path / "usage.json")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen(cmd, env=env)
    done_before_kill = 0
    try:
        deadline = time.time() + 120
        while time.time() < deadline and p.poll() is None:
            if cache.exists():
                with contextlib.suppress(sqlite3.OperationalError):
                    done_before_kill = (
                        sqlite3.connect(cache).execute("SELECT COUNT(*) FROM responses").fetchone()[0]
                    )
            if done_before_kill >= 6:
                break
            time.sleep(0.02)
        p.send_signal(signal.SIGKILL)
    finally:
        p.kill()
        p.wait()
    assert not (tmp_path / "usage.json").exists(), "the first run should have been killed half-way"
    kept = sqlite3.connect(cache).execute("SELECT COUNT(*) FROM responses").fetchone()[0]
    assert 6 <= kept < 80
    subprocess.run(cmd, env=env, check=True, timeout=300)
    usage = json.loads((tmp_path / "usage.json").read_text())["backends"][f"hf:{tiny_model}"]
    assert usage["cache_hits"] == kept
    assert usage["samples"] == 80
    assert sqlite3.connect(cache).execute("SELECT COUNT(*) FROM responses").fetchone()[0] == 80

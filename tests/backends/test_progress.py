"""Progress from the backend layer: hf ticks every decoding step and every finished request, the
cache ticks what it answers itself, and the ledger keeps the cost of cached work and gives tokens/s."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from sage_dialog.backends import ChatRequest, SamplingParams, load_backend, progress
from sage_dialog.backends.base import Backend
from sage_dialog.backends.cache import CachedBackend
from sage_dialog.backends.ledger import Ledger


@pytest.fixture(scope="module")
def hf(tiny_model: Path) -> Backend:
    return load_backend(f"hf:{tiny_model}", batch_size=16)


class Collect:
    def __init__(self) -> None:
        self.ticks: list[tuple[int, int]] = []
        self.lock = threading.Lock()

    def __call__(self, requests: int, tokens: int) -> None:
        with self.lock:
            self.ticks.append((requests, tokens))

    def total(self) -> tuple[int, int]:
        return sum(r for r, _ in self.ticks), sum(t for _, t in self.ticks)


def test_hf_ticks_tokens_per_decoding_step_and_each_request(hf: Backend, tmp_path: Path) -> None:
    reqs = [ChatRequest([{"role": "user", "content": f"tell me about day {i}"}], n=2,
                        sampling=SamplingParams(max_tokens=12 + 4 * i, seed=i)) for i in range(3)]
    seen = Collect()
    with progress.listen(seen):
        res = asyncio.run(hf.generate(reqs))
    token_ticks = [t for r, t in seen.ticks if r == 0]
    assert len(token_ticks) >= 10  # one per decoding step of the batch, not one per call
    requests, tokens = seen.total()
    assert requests == 3
    assert tokens == sum(c.tokens_out for r in res for c in r.completions)
    # nothing is reported once the listener is gone
    asyncio.run(hf.generate(reqs[:1]))
    assert seen.total()[0] == 3

    ledger = Ledger("t", prices={"*": {"input": 1.0, "output": 2.0}})
    cached = ledger.track(CachedBackend(hf, tmp_path / "c.sqlite"))
    asyncio.run(cached.generate(reqs))
    first = ledger.to_dict()["totals"]
    assert first["tokens_per_s"] and first["tokens_per_s"] > 0 and first["cached_tokens_out"] == 0
    again = Ledger("t", prices={"*": {"input": 1.0, "output": 2.0}})
    from_cache = Collect()
    with progress.listen(from_cache):
        asyncio.run(again.track(CachedBackend(hf, tmp_path / "c.sqlite")).generate(reqs))
    assert from_cache.total() == (3, 0)  # the cache answered all three requests
    totals = again.to_dict()["totals"]
    assert totals["cost_usd"] == 0 and totals["tokens_out"] == 0 and totals["tokens_per_s"] is None
    # what the finished work cost is kept, not rewritten as 0
    assert totals["cached_tokens_out"] == first["tokens_out"]
    assert totals["recorded_cost_usd"] == pytest.approx(first["cost_usd"])


def test_meter_shows_requests_tokens_and_speed_on_the_bar() -> None:
    from tqdm import tqdm

    bar = tqdm(total=1, disable=True)
    meter = progress.Meter(bar, every_s=0.0)
    with progress.listen(meter):
        progress.tick(requests=1, tokens=30)
        progress.tick(tokens=12)
    progress.tick(requests=5)  # after the block: not counted
    assert (meter.requests, meter.tokens) == (1, 42)
    assert "requests 1, tokens 42" in meter.text() and "tok/s" in meter.text()

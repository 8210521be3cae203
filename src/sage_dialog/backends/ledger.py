"""Usage ledger per stage: requests, samples, tokens in/out, cache hits, errors, time and cost.

Wrap the stage's backend, run the stage, write the ledger next to the stage's outputs::

    ledger = Ledger("annotate", prices={"openai:gpt-4o-mini": {"input": 0.15, "output": 0.60}})
    backend = ledger.track(load_backend(cfg))      # outermost, so it sees cache hits
    ...                                            # the stage calls backend.generate / score
    ledger.write(out_dir / "usage.json")

Prices are US dollars per million tokens, looked up by backend name (``provider:model``), then by
model, then ``"*"``. Tokens served from the cache are counted as hits and cost nothing now; they are
also counted as ``cached_tokens_in/out`` and priced in ``recorded_cost_usd``: what the work cost when
it was first done, which a re-run served from the cache keeps instead of reporting 0.
``tokens_per_s`` in the totals is the output tokens generated (not cached) over the wall time from
the first call's start to the last call's end (model loading and other work before excluded).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sage_dialog.backends.base import (
    Backend,
    BackendError,
    ChatRequest,
    ChatResult,
    ChatStream,
    ScoreRequest,
    ScoreResult,
)
from sage_dialog.core.io import write_json


@dataclass
class Usage:
    """Counters for one backend within one stage."""

    requests: int = 0  # generate requests (each asks for n samples)
    samples: int = 0  # completions returned
    score_requests: int = 0
    tokens_in: int = 0  # prompt tokens actually computed (cache hits excluded)
    tokens_out: int = 0
    cache_hits: int = 0  # samples / score results served from the cache
    cached_tokens_in: int = 0  # tokens of the cache hits: what they cost when first generated
    cached_tokens_out: int = 0
    errors: int = 0  # failed calls (BackendError), by kind in error_kinds
    seconds: float = 0.0  # wall time spent inside the backend (overlapping calls add up)
    cost_usd: float | None = None
    recorded_cost_usd: float | None = None  # cost_usd plus the price of the cached tokens

    def __post_init__(self) -> None:
        self.error_kinds: dict[str, int] = {}


class Ledger:
    """Counts every call made through the backends it :meth:`track` s."""

    def __init__(self, stage: str, prices: Mapping[str, Mapping[str, float]] | None = None):
        self.stage = stage
        self.prices = {k: dict(v) for k, v in (prices or {}).items()}
        self.usage: dict[str, Usage] = {}
        self.started = time.time()
        self._first_call: float | None = None  # perf_counter of the first call's start
        self._last_end: float | None = None

    def _span(self, start: float) -> None:
        """Note one call from ``start`` to now, for the wall time that ``tokens_per_s`` divides by."""
        self._first_call = start if self._first_call is None else min(self._first_call, start)
        self._last_end = time.perf_counter()

    @property
    def active_seconds(self) -> float:
        """Wall seconds from the first call's start to the last call's end (0 before any call)."""
        if self._first_call is None or self._last_end is None:
            return 0.0
        return self._last_end - self._first_call

    def track(self, backend: Backend) -> Backend:
        """Return ``backend`` wrapped so that its calls are counted here."""
        return MeteredBackend(backend, self)

    def _u(self, name: str) -> Usage:
        return self.usage.setdefault(name, Usage())

    def record_generate(
        self, name: str, requests: Sequence[ChatRequest], results: Sequence[ChatResult]
    ) -> None:
        u = self._u(name)
        u.requests += len(requests)
        for res in results:
            for c in res.completions:
                if c.finish_reason == "error":  # a failed sample returned in place (on_error="return")
                    u.errors += 1
                    kind = (c.error or "error").partition(":")[0]
                    u.error_kinds[kind] = u.error_kinds.get(kind, 0) + 1
            fresh = [c for c in res.completions if not c.cached]
            u.samples += len(res.completions)
            u.cache_hits += len(res.completions) - len(fresh)
            u.tokens_out += sum(c.tokens_out for c in fresh)
            u.cached_tokens_out += sum(c.tokens_out for c in res.completions if c.cached)
            if fresh:
                u.tokens_in += res.tokens_in
            elif res.completions:
                u.cached_tokens_in += res.tokens_in

    def record_score(self, name: str, results: Sequence[ScoreResult]) -> None:
        u = self._u(name)
        u.score_requests += len(results)
        for r in results:
            if r.cached:
                u.cache_hits += 1
                u.cached_tokens_in += r.tokens_in
            else:
                u.tokens_in += r.tokens_in

    def record_error(self, name: str, err: BaseException) -> None:
        u = self._u(name)
        u.errors += 1
        kind = err.kind if isinstance(err, BackendError) else type(err).__name__
        u.error_kinds[kind] = u.error_kinds.get(kind, 0) + 1

    def price_for(self, name: str) -> dict[str, float] | None:
        model = name.partition(":")[2]
        for k in (name, model, "*"):
            if k in self.prices:
                return self.prices[k]
        return None

    def to_dict(self) -> dict[str, Any]:
        backends: dict[str, Any] = {}
        total_cost: float | None = None
        recorded_cost: float | None = None
        for name, u in sorted(self.usage.items()):
            p = self.price_for(name)
            if p is not None:
                u.cost_usd = (u.tokens_in * p.get("input", 0.0) + u.tokens_out * p.get("output", 0.0)) / 1e6
                u.recorded_cost_usd = u.cost_usd + (u.cached_tokens_in * p.get("input", 0.0)
                                                    + u.cached_tokens_out * p.get("output", 0.0)) / 1e6
                total_cost = (total_cost or 0.0) + u.cost_usd
                recorded_cost = (recorded_cost or 0.0) + u.recorded_cost_usd
            d = asdict(u)
            d["error_kinds"] = dict(u.error_kinds)
            d["seconds"] = round(u.seconds, 3)
            backends[name] = d
        keys = ("requests", "samples", "score_requests", "tokens_in", "tokens_out", "cache_hits",
                "cached_tokens_in", "cached_tokens_out", "errors")
        totals: dict[str, Any] = {k: sum(getattr(u, k) for u in self.usage.values()) for k in keys}
        totals["cost_usd"] = total_cost
        totals["recorded_cost_usd"] = recorded_cost
        secs = self.active_seconds
        totals["seconds"] = round(secs, 3)
        totals["tokens_per_s"] = round(totals["tokens_out"] / secs, 1) if secs > 0 and totals["tokens_out"] else None
        return {
            "stage": self.stage,
            "started": self.started,
            "finished": time.time(),
            "backends": backends,
            "totals": totals,
        }

    def write(self, path: str | Path) -> Path:
        """Write the ledger as JSON (atomically); return the path."""
        write_json(path, self.to_dict())
        return Path(path)


class MeteredBackend(Backend):
    """A transparent wrapper that reports each call to a :class:`Ledger`."""

    def __init__(self, inner: Backend, ledger: Ledger):
        super().__init__(inner.model)
        self.inner = inner
        self.ledger = ledger
        self.provider = inner.provider

    @property
    def name(self) -> str:
        return self.inner.name

    def identity(self) -> dict[str, Any]:
        return self.inner.identity()

    def request_key(self, request: ChatRequest | ScoreRequest) -> dict[str, Any]:
        return self.inner.request_key(request)

    @property
    def supports_logprobs(self) -> bool:
        return bool(getattr(self.inner, "supports_logprobs", False))

    @property
    def supports_scoring(self) -> bool:
        return self.inner.supports_scoring

    async def generate(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        t = time.perf_counter()
        try:
            out = await self.inner.generate(requests)
        except (BackendError, asyncio.TimeoutError) as e:
            self.ledger.record_error(self.name, e)
            raise
        finally:
            self.ledger._u(self.name).seconds += time.perf_counter() - t
            self.ledger._span(t)
        self.ledger.record_generate(self.name, requests, out)
        return out

    @property
    def supports_streaming(self) -> bool:
        return self.inner.supports_streaming

    async def _stream(self, request: ChatRequest, out: ChatStream) -> AsyncIterator[str]:
        """Pass the inner backend's pieces through; the finished sample is counted like a generate."""
        t = time.perf_counter()
        try:
            async with self.inner.stream(request) as inner:
                async for piece in inner:
                    yield piece
        except BackendError as e:
            self.ledger.record_error(self.name, e)
            raise
        finally:
            self.ledger._u(self.name).seconds += time.perf_counter() - t
            self.ledger._span(t)
        if inner.completion is not None:
            out.completion, out.tokens_in = inner.completion, inner.tokens_in
            self.ledger.record_generate(self.name, [request], [ChatResult([inner.completion], inner.tokens_in)])

    async def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        t = time.perf_counter()
        try:
            out = await self.inner.score(requests)
        except BackendError as e:
            self.ledger.record_error(self.name, e)
            raise
        finally:
            self.ledger._u(self.name).seconds += time.perf_counter() - t
            self.ledger._span(t)
        self.ledger.record_score(self.name, out)
        return out

    async def aclose(self) -> None:
        await self.inner.aclose()

"""Micro-batching for the in-process backends (``hf``, ``vllm``): concurrent ``generate()`` calls are
merged into batches of rows, run one batch at a time in a worker thread, and every sample gets a
seed of its own (:func:`sample_seed`) so its text does not depend on what shares its batch.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sage_dialog.backends.base import SamplingParams

_SEED_MIX = 0x9E3779B97F4A7C15  # golden-ratio constant: spreads (seed, sample) pairs over 63 bits


def sample_seed(seed: int, index: int) -> int:
    """The random seed of sample ``index`` of a request seeded with ``seed`` (stable across runs)."""
    return (seed * _SEED_MIX + index * 0xBF58476D1CE4E5B9 + 1) % (2**63 - 1)


@dataclass
class _Job:
    payload: Any
    rows: int
    future: asyncio.Future[Any]


class MicroBatcher:
    """Merge work submitted by concurrent coroutines into batches of at most ``max_rows`` rows.

    ``run`` takes a list of payloads and returns one result per payload; it runs in a worker thread
    (one batch at a time), so while a batch runs, new submissions pile up and form the next one.
    """

    def __init__(self, run: Callable[[list[Any]], list[Any]], max_rows: int, linger_s: float = 0.002):
        self._run = run
        self.max_rows = max(1, int(max_rows))
        self.linger_s = linger_s
        self._pending: collections.deque[_Job] = collections.deque()
        self._task: asyncio.Task[None] | None = None
        self.batches_run = 0
        self.rows_run = 0

    def submit(self, payload: Any, rows: int) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._pending.append(_Job(payload, rows, fut))
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = loop.create_task(self._drain())
        return fut

    async def _drain(self) -> None:
        while self._pending:
            await asyncio.sleep(self.linger_s)  # let other coroutines enqueue before cutting a batch
            batch: list[_Job] = []
            rows = 0
            while self._pending and (not batch or rows + self._pending[0].rows <= self.max_rows):
                job = self._pending.popleft()
                if job.future.cancelled():
                    continue
                batch.append(job)
                rows += job.rows
            if not batch:
                continue
            try:
                results = await asyncio.to_thread(self._run, [j.payload for j in batch])
            except asyncio.CancelledError:
                for j in batch:
                    j.future.cancel()
                raise
            except BaseException as e:  # deliver the failure to every caller of this batch
                for j in batch:
                    if not j.future.done():
                        j.future.set_exception(e)
                continue
            self.batches_run += 1
            self.rows_run += rows
            for j, r in zip(batch, results, strict=True):
                if not j.future.done():
                    j.future.set_result(r)


@dataclass
class GenPayload:
    """One request's share of a batch: its rendered prompt, its sampling, and which of its samples
    (``first_sample`` on, ``count`` of them; their seeds come from :func:`sample_seed`)."""

    prompt: str
    sampling: SamplingParams
    first_sample: int
    count: int
    result: Any = field(default=None)
    json_schema: dict[str, Any] | None = None  # constrained decoding (hf: xgrammar; vllm: guided)
    cancel: threading.Event = field(default_factory=threading.Event)  # set when its caller stops waiting
    logprobs: int | None = None  # ChatRequest.logprobs


__all__ = ["GenPayload", "MicroBatcher", "sample_seed"]

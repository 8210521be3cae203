"""Batching of concurrent calls: many callers, one list call to the backend.

A search runs every seed at once, each seed asking the models for a few items at a time; a
:class:`Coalescer` in front of a list-taking call (``backend.generate``, a user simulator's
``reply``, a selector's ``select``) merges the calls made in the same scheduling round into one, so
a batching backend sees full batches, and hands each caller its own slice of the results.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Coalescer(Generic[T, R]):
    """Merge list calls made concurrently into one call of ``fn`` (order kept, results split back).

    A flush waits until no new submission arrived for ``settle`` scheduling rounds, so every seed
    that is about to ask joins the same batch. ``batches`` records the size of each real call.
    """

    def __init__(self, fn: Callable[[list[T]], Awaitable[list[R]]], settle: int = 3):
        self.fn = fn
        self.settle = settle
        self._pending: list[tuple[list[T], asyncio.Future[list[R]]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.batches: list[int] = []

    async def __call__(self, items: list[T]) -> list[R]:
        if not items:
            return []
        fut: asyncio.Future[list[R]] = asyncio.get_running_loop().create_future()
        self._pending.append((items, fut))
        if self._flusher is None:
            self._flusher = asyncio.ensure_future(self._flush())
        return await fut

    async def _flush(self) -> None:
        last = -1
        while len(self._pending) != last:
            last = len(self._pending)
            for _ in range(self.settle):
                await asyncio.sleep(0)
        batch, self._pending, self._flusher = self._pending, [], None
        flat = [x for items, _ in batch for x in items]
        self.batches.append(len(flat))
        try:
            results = await self.fn(flat)
            if len(results) != len(flat):
                raise RuntimeError(f"batched call returned {len(results)} results for {len(flat)} items")
        except BaseException as e:
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(e)
            return
        pos = 0
        for items, fut in batch:
            if not fut.done():
                fut.set_result(results[pos : pos + len(items)])
            pos += len(items)

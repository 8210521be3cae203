"""Annotation on Ray workers: each worker builds the config's annotator once; chunks are the units.

:class:`RemoteAnnotator` stands in for the annotator in :func:`sage_dialog.stages.annotate.run`: the
stage hands it chunks as before (several in flight, one per worker and one queued), and writes the
results in input order, so the output files are the ones a local run writes. A worker killed mid-
chunk is restarted by Ray and the chunk annotated again; answers already given come from the
response cache (``cache:``, a SQLite file on storage the workers share).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from sage_dialog.core.schema import Dialog
from sage_dialog.roles.protocols import AnnotationResult
from sage_dialog.stages.engine import EngineSettings, open_pool


class AnnotateWorker:
    """What one Ray actor holds: the annotator of the settings (built on the worker's node)."""

    def __init__(self, settings: Any, build: Callable[[Any], tuple[Any, Any]]):
        self.annotator, self.backend = build(settings)  # annotate.build_annotator: the annotator and its pool

    async def annotate(self, chunk: Sequence[Dialog]) -> tuple[list[AnnotationResult], dict[str, int]]:
        before = Counter(getattr(self.annotator, "stats", Counter()))
        results = await self.annotator.annotate(chunk)
        after = Counter(getattr(self.annotator, "stats", Counter()))
        after.subtract(before)
        return list(results), {k: int(v) for k, v in after.items() if v}

    async def aclose(self) -> None:
        if self.backend is not None:
            await self.backend.aclose()


def _make_worker(settings: Any, build: Callable[[Any], tuple[Any, Any]]) -> AnnotateWorker:
    return AnnotateWorker(settings, build)


class RemoteAnnotator:
    """The annotator protocol over a pool of Ray workers (usage counters summed from the workers)."""

    def __init__(self, settings: Any, build: Callable[[Any], tuple[Any, Any]]):
        local = settings.model_copy(update={"engine": EngineSettings()})
        spec = settings.annotator if isinstance(settings.annotator, str) else settings.annotator.spec
        self.pool = open_pool(settings.engine, partial(_make_worker, local, build),
                              gpu_backend=spec.startswith("vllm:"))
        self.name = f"ray[{len(self.pool)} workers]"
        self.stats: Counter[str] = Counter()
        self.parallel_chunks = (settings.engine.concurrency + 1) * len(self.pool)

    async def annotate(self, dialogs: Sequence[Dialog]) -> list[AnnotationResult]:
        results, stats = await self.pool.call("annotate", list(dialogs))
        self.stats.update(stats)
        return list(results)

    async def aclose(self) -> None:
        self.pool.close()


__all__ = ["AnnotateWorker", "RemoteAnnotator"]

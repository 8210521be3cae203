"""Search on Ray workers: each worker loads the search's roles once; seeds are the units.

A worker searches one seed at a time with the same code as a local run (:func:`search_async` on a
one-seed list at the seed's index), so each seed's journal (``journal/seed-NNNN.jsonl``) and tree
(``trees/seed-NNNN.jsonl``, written atomically) land in the output folder as they would locally.
The folder must be on storage every Ray node sees (one machine, NFS, a cluster file system): a
worker killed mid-seed is restarted by Ray and that seed replays its journal, then goes on. The
driver then writes ``best.jsonl``, ``trees.html``, the transcripts and the manifest, as a local
search does. Trees are the local run's, byte for byte (sampling seeds come from the config seed,
the tree and the node; tested in ``tests/scale/test_ray_stages.py``).
"""

from __future__ import annotations

import asyncio
import time
from functools import partial
from pathlib import Path
from typing import Any

from sage_dialog.core.errors import UserError
from sage_dialog.stages.engine import EngineSettings, open_pool


class SearchWorker:
    """What one Ray actor holds: the assistant backend, user simulator and selector of a search."""

    def __init__(self, cfg: Any):
        from sage_dialog.stages.search.setup import backend_pool, build_roles

        self.strategy = cfg.strategy()
        self.pool = backend_pool(cfg)
        self.assistant, self.user, self.selector = build_roles(cfg, self.pool, self.strategy)

    def names(self) -> dict[str, str]:
        return {"assistant": self.assistant.name, "user": self.user.name, "selector": self.selector.name}

    async def seed(self, index: int, text: str, out: str, run_seeds: list[str]) -> dict[str, Any]:
        """Search seed ``index`` into ``out`` (its journal and tree); returns the usage numbers."""
        from sage_dialog.stages.search.search import search_async

        if not Path(out).is_dir():
            raise UserError(f"search: {out} is not visible on this Ray node; the output folder must be on storage "
                            f"all nodes share")
        return await search_async(self.assistant, self.user, self.selector, [text], self.strategy, out,
                                  index_offset=index, run_seeds=run_seeds)

    async def aclose(self) -> None:
        await self.pool.aclose()


def _make_worker(cfg: Any) -> SearchWorker:
    return SearchWorker(cfg)


def merge_stats(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The usage numbers of several :func:`search_async` calls, summed (nested counts summed, lists joined)."""
    total: dict[str, Any] = {}
    for part in parts:
        for k, v in part.items():
            if isinstance(v, dict):
                d = total.setdefault(k, {})
                for kk, vv in v.items():
                    d[kk] = d.get(kk, [] if isinstance(vv, list) else 0) + vv  # counts, or batch sizes
            elif isinstance(v, int | float):
                total[k] = total.get(k, 0) + v
    return total


def run_remote(cfg: Any, seeds: list[str], *, progress: bool = False) -> Path:
    """Search ``seeds`` on the Ray workers of ``cfg.engine`` into ``cfg.out``; returns the folder."""
    from sage_dialog.stages.search.search import finish_search, search_manifest

    out = Path(cfg.out).resolve()
    if not seeds:
        raise UserError("no seeds to search from")
    out.mkdir(parents=True, exist_ok=True)
    todo = [(i, s) for i, s in enumerate(seeds) if not (out / "trees" / f"seed-{i:04d}.jsonl").exists()]
    local = cfg.model_copy(update={"engine": EngineSettings()})
    pool = open_pool(cfg.engine, partial(_make_worker, local), gpu_backend=str(cfg.assistant).startswith("vllm:"))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(seeds), desc=f"search ({len(pool)} ray workers)", unit="seed",
                   initial=len(seeds) - len(todo))

    async def one(i: int, text: str) -> dict[str, Any]:
        stats = await pool.call("seed", i, text, str(out), seeds)
        if bar is not None:
            bar.update(1)
        return stats

    async def main() -> tuple[dict[str, str], list[dict[str, Any]]]:
        names = await pool.call("names")
        return names, list(await asyncio.gather(*(one(i, s) for i, s in todo)))

    t0 = time.perf_counter()
    try:
        names, parts = asyncio.run(main())
    finally:
        if bar is not None:
            bar.close()
        pool.close()
    stats = merge_stats(parts) if parts else {}
    for k in ("requests", "tokens", "model_calls", "replayed_calls", "fresh_tokens_out"):
        stats.setdefault(k, 0)
    stats.setdefault("batches", {})
    stats.setdefault("outcomes", {})
    stats.setdefault("stopped", {})
    finish_search(out, len(seeds), stats, time.perf_counter() - t0, search_manifest(local.strategy(), names))
    return Path(cfg.out)


__all__ = ["SearchWorker", "merge_stats", "run_remote"]

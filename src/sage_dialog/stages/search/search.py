"""Self-play dialog tree search with a judge: every strategy behind one orchestrator.

For every seed a strategy grows a tree of assistant and user turns and keeps its best path:

* ``best_of_n`` (the original SAGE search), ``beam`` and ``lookahead`` branch on whole sampled
  replies (:mod:`.text`);
* ``latent`` and ``mcts`` branch on the State-Action Chain *action*: K actions are proposed with the
  model's own priors and realised by prefilling them; ``latent`` judges them best-of-K, ``mcts`` runs
  PUCT over them (:mod:`.latent`, :mod:`.mcts`, their shared parts in :mod:`.actions`; options in
  ``SearchConfig.latent``).

A strategy is a module with ``run(ctx)`` over a :class:`~.context.SearchContext` (the seed's
journaled calls, budget and nodes; :data:`STRATEGIES` names them). A per-seed budget in requests
and/or tokens ends a seed's search early (recorded as ``stopped: budget``).

Everything is in flight at once: the seeds run concurrently and every model call goes through a
:class:`~sage_dialog.backends.coalesce.Coalescer` that merges the calls of all seeds made in the same
scheduling round into one list for the backend, so a batching backend sees full batches.

Resumable: each seed keeps a journal of its completed calls (``journal/<tree>.jsonl``); a killed
search run again on the same folder replays the journal instead of calling the models and then
continues, giving the same tree as an uninterrupted run (sampling seeds are derived from the config
seed, the tree and the node, never from batch composition or timing).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from sage_dialog.backends.base import Backend
from sage_dialog.core import io
from sage_dialog.core.errors import UserError
from sage_dialog.core.schema import Dialog, SearchNode, Tags
from sage_dialog.roles.protocols import Selector, UserSimulator
from sage_dialog.stages.search import latent, mcts, text
from sage_dialog.stages.search.actions import load_action_set
from sage_dialog.stages.search.config import LATENT_STRATEGIES, SearchConfig
from sage_dialog.stages.search.context import Roles, SearchContext
from sage_dialog.stages.search.tree import best_path, path_dialog, write_tree

# strategy name -> its run(ctx): the search of one seed
STRATEGIES: dict[str, Callable[[SearchContext], Awaitable[list[SearchNode]]]] = {
    "best_of_n": text.run, "beam": text.run, "lookahead": text.run, "latent": latent.run, "mcts": mcts.run,
}


# ---------------------------------------------------------------------------------------------
# the stage


def _run_info(cfg: SearchConfig, seeds: list[str], assistant: Backend, user: UserSimulator,
              selector: Selector) -> dict[str, Any]:
    # the latent options only when they matter: folders of the other strategies resume as before
    config = cfg.model_dump(mode="json", exclude=None if cfg.strategy in LATENT_STRATEGIES else {"latent"})
    return {"config": config, "seeds": io.stable_hash(seeds),
            "assistant": assistant.name, "user": user.name, "selector": selector.name}


async def search_async(assistant: Backend, user: UserSimulator, selector: Selector, seeds: list[str],
                       cfg: SearchConfig, out_dir: str | Path, *, progress: bool = False,
                       index_offset: int = 0, run_seeds: Sequence[str] | None = None) -> dict[str, Any]:
    """The search itself (see :func:`run_search`); returns usage and summary numbers.

    ``run_seeds``: every seed of the run when ``seeds`` are some of them (a Ray worker's unit); the
    folder's ``search.json`` identifies the whole run."""
    out = Path(out_dir)
    if not seeds:
        raise UserError("no seeds to search from")
    action_set: list[Tags] | None = None
    if cfg.strategy in LATENT_STRATEGIES:  # fail before anything is written
        if cfg.latent.action_set is not None:
            action_set = load_action_set(cfg.latent.action_set)
        if not assistant.supports_scoring:
            raise UserError(f"--strategy {cfg.strategy} scores actions with the assistant model; "
                            f"backend {assistant.name} cannot score options")
    info = _run_info(cfg, list(run_seeds or seeds), assistant, user, selector)
    info_path = out / "search.json"
    if info_path.exists():
        old = io.read_json(info_path)
        if old != json.loads(json.dumps(info)):
            changed = sorted(k for k in info if old.get(k) != info[k])
            raise UserError(f"{info_path}: {out} holds a search with a different {', '.join(changed)}; "
                            f"use a new output folder or delete it")
    else:
        io.write_json(info_path, info)
    roles = Roles(assistant, user, selector)
    trees_dir, journal_dir = out / "trees", out / "journal"
    searches: list[SearchContext | None] = []
    for i, s in enumerate(seeds, index_offset):
        tree = trees_dir / f"seed-{i:04d}.jsonl"
        searches.append(None if tree.exists() else SearchContext(i, s, cfg, roles, journal_dir / f"seed-{i:04d}.jsonl",
                                                                 action_set=action_set))

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(seeds), desc="search", unit="seed", initial=sum(x is None for x in searches))
    from sage_dialog.backends import progress as ticks

    meter = ticks.Meter(bar)  # the postfix moves with every request and token while a seed is searched
    stats: dict[str, Any] = {"requests": 0, "tokens": 0, "generated_tokens": 0, "model_calls": 0, "replayed_calls": 0, "outcomes": {},
                             "stopped": {}, "fresh_tokens_out": 0}

    async def one(s: SearchContext) -> None:
        try:
            nodes = await STRATEGIES[cfg.strategy](s)
        finally:
            s.journal.close()
        meta = {"seed": s.seed_text, "strategy": cfg.strategy, "stopped": s.stopped, "requests": s.requests,
                "tokens": s.tokens, "generated_tokens": s.generated}
        write_tree(trees_dir / f"{s.tree}.jsonl", nodes)
        io.write_json(trees_dir / f"{s.tree}.meta.json", meta)
        stats["requests"] += s.requests
        stats["tokens"] += s.tokens
        stats["generated_tokens"] += s.generated
        stats["model_calls"] += s.calls
        stats["fresh_tokens_out"] += s.fresh_tokens_out
        stats["replayed_calls"] += min(len(s.replay), s.step)
        for k, v in s.outcomes.items():
            stats["outcomes"][k] = stats["outcomes"].get(k, 0) + v
        if s.stopped:
            stats["stopped"][s.stopped] = stats["stopped"].get(s.stopped, 0) + 1
        if bar is not None:
            bar.update(1)

    try:
        with ticks.listen(meter):
            await asyncio.gather(*(one(s) for s in searches if s is not None))
        meter.close()
    finally:
        if bar is not None:
            bar.close()
    stats["batches"] = roles.batches()
    return stats


def load_trees(out_dir: str | Path) -> list[list[SearchNode]]:
    """Every tree of a finished search folder, in seed order."""
    from sage_dialog.stages.search.tree import read_tree

    return [read_tree(p) for p in sorted((Path(out_dir) / "trees").glob("seed-*.jsonl"))]


def best_dialogs(out_dir: str | Path) -> list[Dialog]:
    """The best path of every tree of a search folder, as dialogs."""
    out = []
    for nodes in load_trees(out_dir):
        meta_path = Path(out_dir) / "trees" / f"{nodes[0].tree}.meta.json"
        meta = io.read_json(meta_path) if meta_path.exists() else {}
        path = best_path(nodes)
        scores = [n.score for n in path if n.score is not None]
        if scores:
            meta["score"] = sum(scores) / len(scores)
        out.append(path_dialog(nodes, meta=meta))
    return out


def run_search(assistant: Backend, user: UserSimulator, selector: Selector, seeds: list[str], cfg: SearchConfig,
               out_dir: str | Path, *, progress: bool = False, transcripts: bool = True, index_offset: int = 0) -> Path:
    """Search from every seed and write the results into ``out_dir``; returns ``out_dir``.

    Writes ``trees/seed-NNNN.jsonl`` (every node), ``best.jsonl`` (the best path of each seed as a
    :class:`Dialog`), ``trees.html`` (the tree view of :mod:`.view`), ``transcripts/`` (+ ``full/``) in
    the original SAGE format when the transcript writer is available, and ``manifest.json``. Re-running
    on the same folder resumes.
    """
    out = Path(out_dir)
    manifest = search_manifest(cfg, {"assistant": assistant.name, "user": user.name, "selector": selector.name})
    t0 = time.perf_counter()
    stats = asyncio.run(search_async(assistant, user, selector, seeds, cfg, out, progress=progress,
                                     index_offset=index_offset))
    return finish_search(out, len(seeds), stats, time.perf_counter() - t0, manifest, transcripts=transcripts)


def search_manifest(cfg: SearchConfig, names: dict[str, str]) -> io.Manifest:
    """The manifest a search starts with (``names``: assistant, user and selector names)."""
    return io.new_manifest("search", {**cfg.model_dump(mode="json"), **names}, seed=cfg.seed)


def finish_search(out: Path, n_seeds: int, stats: dict[str, Any], seconds: float, manifest: io.Manifest, *,
                  transcripts: bool = True) -> Path:
    """After every seed's tree is written: ``best.jsonl``, ``trees.html``, transcripts and the manifest."""
    # assistant tokens this run generated (not replayed, not cached) over the search's wall time
    fresh = stats["fresh_tokens_out"]
    stats["tokens_per_s"] = round(fresh / seconds, 1) if seconds > 0 and fresh else None
    dialogs = best_dialogs(out)
    io.write_jsonl(out / "best.jsonl", dialogs)
    from sage_dialog.stages.search.view import write_html

    # the tree view (`sage-dialog trees`), there after every search without an extra step
    write_html({t[0].tree: t for t in load_trees(out)}, out / "trees.html")
    outputs = ["trees", "best.jsonl", "trees.html"]
    if transcripts:
        export_transcripts(out)
        outputs.append("transcripts")
    io.finish_manifest(manifest, out, outputs=outputs,
                       usage={k: stats[k] for k in ("requests", "tokens", "model_calls", "replayed_calls", "batches",
                                                    "tokens_per_s")},
                       summary={"seeds": n_seeds, "nodes": sum(len(t) for t in load_trees(out)),
                                "outcomes": stats["outcomes"], "stopped": stats["stopped"]})
    return out


def decision_counts(manifest: dict[str, Any]) -> dict[str, Any]:
    """The judge's decisions of a finished search (from its ``manifest.json``): how many in all and how
    many chose a candidate, said none was good, or did not parse; and the generation speed."""
    outcomes = manifest.get("summary", {}).get("outcomes", {})
    out: dict[str, Any] = {"decisions": sum(outcomes.values()),
                           **{k: int(outcomes.get(k, 0)) for k in ("chosen", "none_good", "unparsed")}}
    speed = manifest.get("usage", {}).get("tokens_per_s")
    if speed is not None:
        out["tokens_per_s"] = speed
    return out


def export_transcripts(out_dir: str | Path, dest: str | Path | None = None) -> int:
    """Write every tree of a search folder in the original transcript layout (``dest/*.txt`` + ``dest/full/``).

    ``dest`` defaults to ``out_dir/transcripts``. Returns the number of transcripts.
    """
    from sage_dialog.formats.transcripts import dialog_from_tree, write_transcripts

    return write_transcripts(Path(dest) if dest else Path(out_dir) / "transcripts",
                             [dialog_from_tree(nodes) for nodes in load_trees(out_dir)])

"""Preference pairs and best paths from search trees (the ``prefs`` stage).

At every assistant decision of a search tree the kept candidate is *chosen* and each dropped
sibling (or the top ``negatives`` of them by judge score, hardest first) is *rejected*, after the
shared history of the chosen path. The kept path from the root is the *best path*, a dialog for
rejection-sampling fine-tuning.

``level`` chooses what a pair contrasts:

* ``text`` (default): the kept reply against each dropped sibling, whatever their actions.
* ``action``: pairs that share the state and differ in the *action*: the kept candidate against, for
  each other action tried at the decision (its motivation and emotion; a latent search's action
  branches, or the actions free samples happened to carry), that action's best-scored reply, among
  siblings whose state block equals the kept one's. State-level policy improvement: what to do, with
  the reply as its realisation.
* ``tags``: the same pairs with the replies left out (only the tag blocks), for trainers that should
  learn the action choice alone; with ``sage-dialog train dpo`` prefer ``action`` pairs and
  ``data.loss_on: tags``, which trains the same tag tokens and keeps the end of turn in place.

Input is a folder (or file) of tree JSONL (:class:`~sage_dialog.core.schema.SearchNode`) written by
``sage-dialog search``, or a folder of the original SAGE transcripts with their ``full/`` variant.

The stage has the one shape (:mod:`sage_dialog.stages.base`): :class:`Settings` (a run config's
``prefs:`` section), :class:`Inputs`, :class:`Result` and :func:`run`, which the loop and the
``prefs`` command both call.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import Field

from sage_dialog.core import sac
from sage_dialog.core.errors import UserError
from sage_dialog.core.io import write_jsonl
from sage_dialog.core.schema import Dialog, PreferencePair, SearchNode, Turn
from sage_dialog.stages.base import StageResult, StageSettings

OutFormat = Literal["jsonl", "trl", "llamafactory", "sage-comparison"]
Level = Literal["text", "action", "tags"]
# our names for the preference forms of formats/preferences.py ("sage-comparison" is the original's)
_FORMS = {"trl": "trl", "llamafactory": "llamafactory", "sage-comparison": "original"}


class Settings(StageSettings):
    """The ``prefs`` stage: which pairs a search tree gives."""

    negatives: int | None = Field(None, description="rejected candidates per decision (hardest first); all if null")
    min_margin: float | None = Field(None, allow_inf_nan=False,
                                     description="drop pairs whose judge score margin is below this")
    history_tags: bool = Field(True, description="keep the SAC tags of assistant turns in the history")
    max_history: int | None = Field(
        32, ge=1, description="turns of history kept before each pair: the most recent ones, starting at a user "
        "turn (null: the whole path; a pair of a 20,000-turn path would otherwise copy all of it)")
    dedup: bool = Field(True, description="drop repeated pairs and pairs whose two replies are equal")
    max_per_seed: int | None = Field(None, description="cap pairs per seed (balance); null for no cap")
    balance: bool = Field(False, description="cap every seed at the smallest seed's pair count")
    level: Level = Field("text", description="text: reply vs reply; action: same state, different action "
                         "(action + reply each); tags: those pairs with the tag blocks only")
    include_unparsed: bool = Field(
        False, description="also make pairs at decisions whose judge answer was unparsed (the kept reply is then "
        "just the first sample, so such pairs carry no preference; left out and counted by default)")


@dataclass
class Inputs:
    """What the stage reads: a folder (or file) of search trees, or a folder of original transcripts."""

    source: Path


class Result(StageResult):
    """Outputs: ``pairs`` and ``best_paths`` (in a run folder also ``pairs_trl`` and ``best_paths_trl``).
    Counts: pairs kept, seeds, best_paths, candidate pairs ``dropped`` and ``dropped_<reason>`` for each
    reason seen, ``unparsed_decisions_left_out``."""


@dataclass
class Tree:
    """The nodes of one search tree, indexed by id and by parent."""

    name: str
    nodes: dict[str, SearchNode] = field(default_factory=dict)
    children: dict[str | None, list[SearchNode]] = field(default_factory=lambda: defaultdict(list))

    def add(self, node: SearchNode) -> None:
        self.nodes[node.id] = node
        self.children[node.parent].append(node)

    @property
    def root(self) -> SearchNode:
        roots = self.children.get(None, [])
        if len(roots) != 1:
            raise UserError(f"tree {self.name}: expected one root node, found {len(roots)}")
        return roots[0]

    _kept_path: dict[str, bool] = field(default_factory=dict)
    _turns: dict[tuple[str, bool], Turn] = field(default_factory=dict)

    def path_to(self, node: SearchNode, limit: int | None = None) -> list[SearchNode]:
        """The nodes from the root (or the ``limit`` last ones) down to ``node``. The reader has
        refused cycles, so the walk ends; ``limit`` bounds it on a very deep tree."""
        out: list[SearchNode] = []
        cur: SearchNode | None = node
        while cur is not None and (limit is None or len(out) < limit):
            out.append(cur)
            cur = self.nodes.get(cur.parent) if cur.parent is not None else None
        return out[::-1]

    def on_kept_path(self, node: SearchNode) -> bool:
        """Whether ``node`` and all its ancestors are kept (memoized: linear time over a tree)."""
        walk: list[SearchNode] = []
        cur: SearchNode | None = node
        while cur is not None and cur.id not in self._kept_path:
            walk.append(cur)
            cur = self.nodes.get(cur.parent) if cur.parent is not None else None
        ok = True if cur is None else self._kept_path[cur.id]
        for n in reversed(walk):
            ok = ok and n.kept
            self._kept_path[n.id] = ok
        return self._kept_path[node.id]

    def history(self, node: SearchNode, cfg: Settings) -> list[Turn]:
        """The turns up to ``node`` as a pair's history: at most ``cfg.max_history``, starting at a
        user turn when cut; the Turn objects are shared between pairs (not copied per pair)."""
        nodes = self.path_to(node, cfg.max_history)
        if cfg.max_history is not None and nodes and nodes[0].parent is not None:
            while nodes and nodes[0].role != "user":
                nodes = nodes[1:]
        out = []
        for n in nodes:
            key = (n.id, cfg.history_tags)
            if key not in self._turns:
                self._turns[key] = _turn(n, tags=cfg.history_tags)
            out.append(self._turns[key])
        return out

    def best_path(self) -> list[SearchNode]:
        """Follow kept children from the root (the highest-scored kept one when several are)."""
        path = [self.root]
        while True:
            kept = [c for c in self.children.get(path[-1].id, []) if c.kept]
            if not kept:
                return path
            path.append(max(kept, key=lambda c: (c.score if c.score is not None else float("-inf"))))


def read_trees(source: str | Path) -> list[Tree]:
    """Read every tree JSONL under ``source`` (a file or a folder, searched recursively)."""
    from sage_dialog.formats.trees import read_tree_nodes

    # checked: a duplicated node or one whose parent is missing is an error, not a silent pair
    out = []
    for name, nodes in read_tree_nodes(source).items():
        tree = Tree(name)
        for n in nodes:
            tree.add(n)
        out.append(tree)
    return out


def _turn(node: SearchNode, *, tags: bool) -> Turn:
    if node.role == "assistant" and tags:
        return Turn(role="assistant", text=node.text, state=node.state, action=node.action)
    return Turn(role=node.role, text=node.text)


def _margin(chosen: SearchNode, rejected: SearchNode) -> float | None:
    """Judge score of the chosen candidate minus the rejected one's (None when unscored)."""
    if chosen.score is None or rejected.score is None:
        return None
    return chosen.score - rejected.score


def pairs_from_tree(tree: Tree, cfg: Settings, counts: Counter[str] | None = None) -> Iterator[PreferencePair]:
    """One pair per (kept, dropped) assistant candidate at every decision on a kept path.

    A decision whose judge answer was unparsed is left out unless ``cfg.include_unparsed``; ``counts``
    (when given) counts them under ``unparsed_decisions``, and the candidates left out under
    ``beyond_negatives`` and ``below_margin``.
    """
    counts = counts if counts is not None else Counter()
    for parent_id, siblings in tree.children.items():
        cands = [s for s in siblings if s.role == "assistant"]
        kept = [s for s in cands if s.kept]
        dropped = [s for s in cands if not s.kept]
        if not kept or not dropped or parent_id is None:
            continue
        parent = tree.nodes[parent_id]
        if not tree.on_kept_path(parent):
            continue  # a decision under a dropped branch (lookahead rollouts) is not on the chosen path
        history = tree.history(parent, cfg)
        chosen = max(kept, key=lambda c: c.score if c.score is not None else float("-inf"))
        if chosen.decision is not None and chosen.decision.outcome == "unparsed" and not cfg.include_unparsed:
            if counts is not None:
                counts["unparsed_decisions"] += 1
            continue
        ranked = sorted(dropped, key=lambda c: -(c.score if c.score is not None else float("-inf")))
        if cfg.negatives is not None:
            counts["beyond_negatives"] += len(ranked[cfg.negatives:])
            ranked = ranked[: cfg.negatives]
        for rej in ranked:
            margin = _margin(chosen, rej)
            if cfg.min_margin is not None and (margin is None or margin < cfg.min_margin):
                counts["below_margin"] += 1
                continue
            yield PreferencePair(
                id=f"{tree.name}/{chosen.id}>{rej.id}",
                history=history,
                chosen=Turn(role="assistant", text=chosen.text, state=chosen.state, action=chosen.action),
                rejected=Turn(role="assistant", text=rej.text, state=rej.state, action=rej.action),
                seed=tree.name,
                depth=chosen.depth,
                margin=margin,
                tag_diff=sac.tag_diff(chosen.action, rej.action),
                source="search-tree",
            )


def _val(node: SearchNode) -> float:
    return node.score if node.score is not None else float("-inf")


def _action_key(node: SearchNode) -> tuple[str | None, str | None, str]:
    a = node.action
    if a is None:
        return (None, None, "")
    return (a.motivation, a.emotion, repr(sorted(a.extra.items())))


def action_pairs_from_tree(tree: Tree, cfg: Settings,
                           counts: Counter[str] | None = None) -> Iterator[PreferencePair]:
    """One pair per other action tried at each decision on the kept path (see ``level``); unparsed
    decisions are left out and counted as in :func:`pairs_from_tree`."""
    for parent_id, siblings in tree.children.items():
        cands = [s for s in siblings if s.role == "assistant" and not s.sampling.get("lookahead")]
        kept = [s for s in cands if s.kept]
        if not kept or parent_id is None:
            continue
        parent = tree.nodes[parent_id]
        if not tree.on_kept_path(parent):
            continue
        chosen = max(kept, key=lambda c: c.score if c.score is not None else float("-inf"))
        if chosen.decision is not None and chosen.decision.outcome == "unparsed" and not cfg.include_unparsed:
            if counts is not None:
                counts["unparsed_decisions"] += 1
            continue
        if chosen.action is None:
            continue
        best: dict[tuple[str | None, str | None, str], SearchNode] = {}
        for c in cands:  # the best-scored reply of every other action read in the same state
            key = _action_key(c)
            if c is chosen or c.action is None or key == _action_key(chosen) or c.state != chosen.state:
                continue
            if key not in best or _val(c) > _val(best[key]):
                best[key] = c
        ranked = sorted(best.values(), key=lambda c: -_val(c))
        if cfg.negatives is not None:
            ranked = ranked[: cfg.negatives]
        history = tree.history(parent, cfg)
        tags_only = cfg.level == "tags"
        for rej in ranked:
            margin = _margin(chosen, rej)
            if cfg.min_margin is not None and (margin is None or margin < cfg.min_margin):
                continue
            yield PreferencePair(
                id=f"{tree.name}/{chosen.id}>{rej.id}" + ("#tags" if tags_only else "#action"),
                history=history,
                chosen=Turn(role="assistant", text="" if tags_only else chosen.text, state=chosen.state,
                            action=chosen.action),
                rejected=Turn(role="assistant", text="" if tags_only else rej.text, state=rej.state,
                              action=rej.action),
                seed=tree.name,
                depth=chosen.depth,
                margin=margin,
                tag_diff=sac.tag_diff(chosen.action, rej.action),
                source=f"search-tree-{cfg.level}",
            )


def best_path_dialog(tree: Tree) -> Dialog:
    """The kept path of a tree as a SAC dialog."""
    turns = [_turn(n, tags=True) for n in tree.best_path()]
    return Dialog(id=tree.name, turns=turns, meta={"source": "search-tree best path"})


def _pair_key(p: PreferencePair) -> str:
    h = hashlib.sha256()
    for t in [*p.history, p.chosen, p.rejected]:
        h.update(t.role.encode())
        h.update(b"\0")
        h.update(sac.render_turn(t.text, state=t.state, action=t.action).encode())
        h.update(b"\1")
    return h.hexdigest()


def refine(pairs: Iterable[PreferencePair], cfg: Settings, counts: Counter[str] | None = None) -> list[PreferencePair]:
    """Deduplicate and balance pairs per seed as ``cfg`` asks (order kept); ``counts`` hears what was
    left out (``same_reply``, ``duplicate``, ``seed_cap``)."""
    counts = counts if counts is not None else Counter()
    out: list[PreferencePair] = []
    seen: set[str] = set()
    for p in pairs:
        if cfg.dedup:
            if p.chosen.text.strip() == p.rejected.text.strip() and p.chosen.action == p.rejected.action:
                counts["same_reply"] += 1
                continue
            k = _pair_key(p)
            if k in seen:
                counts["duplicate"] += 1
                continue
            seen.add(k)
        out.append(p)
    per_seed: dict[str, list[PreferencePair]] = defaultdict(list)
    for p in out:
        per_seed[p.seed].append(p)
    cap = cfg.max_per_seed
    if cfg.balance and per_seed:
        smallest = min(len(v) for v in per_seed.values())
        cap = smallest if cap is None else min(cap, smallest)
    if cap is None:
        return out
    keep = {id(p) for v in per_seed.values() for p in v[:cap]}
    counts["seed_cap"] += len(out) - len(keep)
    return [p for p in out if id(p) in keep]


def build(trees: list[Tree], cfg: Settings,
          counts: Counter[str] | None = None) -> tuple[list[PreferencePair], list[Dialog]]:
    """Pairs (refined) and best-path dialogs of ``trees``; ``counts`` hears what was left out."""
    make = pairs_from_tree if cfg.level == "text" else action_pairs_from_tree
    pairs = refine((p for t in trees for p in make(t, cfg, counts)), cfg, counts)
    paths = [best_path_dialog(t) for t in trees]
    return pairs, paths


def pairs_from_transcript(d: Dialog, cfg: Settings, counts: Counter[str] | None = None) -> Iterator[PreferencePair]:
    """Pairs of one original ``full/`` transcript, as the original comparison builder made them:
    the chosen path as history and one pair per dropped candidate (the first ``negatives``)."""
    from sage_dialog.formats.transcripts import dropped_from_meta

    counts = counts if counts is not None else Counter()
    dropped = dropped_from_meta(d)
    for i, turn in enumerate(d.turns):
        rejected = dropped.get(i, [])
        if turn.role != "assistant" or not rejected:
            continue
        start = 0 if cfg.max_history is None else max(0, i - cfg.max_history)
        while 0 < start < i and d.turns[start].role != "user":
            start += 1
        history = [t if cfg.history_tags or t.role != "assistant" else Turn(role=t.role, text=t.text)
                   for t in d.turns[start:i]]
        if cfg.negatives is not None:
            counts["beyond_negatives"] += len(rejected[cfg.negatives:])
        for j, rej in enumerate(rejected[: cfg.negatives] if cfg.negatives is not None else rejected):
            if cfg.min_margin is not None:
                counts["below_margin"] += 1
                continue  # transcripts carry no judge scores, so no pair can show a margin
            yield PreferencePair(
                id=f"{d.id}/{i}>{j}",
                history=history,
                chosen=turn,
                rejected=rej,
                seed=d.id,
                depth=i,
                tag_diff=sac.tag_diff(turn.action, rej.action),
                source="sage-transcript",
            )


def _is_transcript_folder(src: Path) -> bool:
    return src.is_dir() and (any(src.glob("*.txt")) or (src / "full").is_dir())


def load_source(source: str | Path, cfg: Settings,
                counts: Counter[str] | None = None) -> tuple[list[PreferencePair], list[Dialog]]:
    """Pairs and best paths from a folder of search trees or of original transcripts (with ``full/``).

    ``counts`` (when given) hears what was left out: ``unparsed_decisions`` and the drop reasons.
    """
    src = Path(source)
    if _is_transcript_folder(src) and not any(src.rglob("*.jsonl")):
        if cfg.level != "text":
            raise UserError(f"{src}: transcripts carry no states to pair actions in; level {cfg.level} needs search trees")
        from sage_dialog.formats.transcripts import read_transcript_dir

        full = read_transcript_dir(src, "full")
        if counts is not None:
            counts["transcripts"] += len(full)
        pairs = refine((p for d in full for p in pairs_from_transcript(d, cfg, counts)), cfg, counts)
        return pairs, [d.model_copy(update={"meta": {"source": "sage-transcript"}}) for d in full]
    return build(read_trees(src), cfg, counts)


def write_pairs(path: str | Path, pairs: list[PreferencePair], fmt: OutFormat) -> int:
    """Write pairs as our JSONL or one of the trainer forms of FORMATS.md section 4."""
    if fmt == "jsonl":
        return write_jsonl(path, pairs)
    from sage_dialog.formats.preferences import write_preferences

    return write_preferences(path, pairs, _FORMS[fmt])  # type: ignore[arg-type]


def run(settings: Settings, *, inputs: Inputs, out: Path, form: OutFormat | None = None,
        best_paths: Path | None = None) -> Result:
    """Pairs and best paths of ``inputs.source``.

    Without ``form`` (the loop's stage) ``out`` is a folder: ``pairs.jsonl`` and ``pairs.trl.jsonl``
    (DPO), ``best_paths.jsonl`` and ``best_paths.trl.jsonl`` (SFT). With ``form`` (the ``prefs``
    command) ``out`` is the pairs file in that form (a folder for ``llamafactory``) and ``best_paths``,
    when given, the dialog JSONL of the best paths. Raises :class:`UserError` when no pair is left.
    """
    from sage_dialog.core.io import check_paths
    from sage_dialog.formats.trl import write_trl_sft

    t0 = time.perf_counter()
    if settings.negatives is not None and settings.negatives < 1:
        raise UserError(f"--negatives {settings.negatives}: must be at least 1")
    as_folder = form is None or form == "llamafactory"
    check_paths(inputs=[inputs.source], files=[None if as_folder else out, best_paths],
                folders=[out if as_folder else None])
    counts: Counter[str] = Counter()
    pairs, paths = load_source(inputs.source, settings, counts)
    if not pairs:
        raise UserError(no_pairs_message(inputs.source, counts))
    outputs: dict[str, Path] = {}
    if form is None:
        outputs = {"pairs": out / "pairs.jsonl", "pairs_trl": out / "pairs.trl.jsonl",
                   "best_paths": out / "best_paths.jsonl", "best_paths_trl": out / "best_paths.trl.jsonl"}
        out.mkdir(parents=True, exist_ok=True)
        write_pairs(outputs["pairs"], pairs, "jsonl")
        write_pairs(outputs["pairs_trl"], pairs, "trl")
        write_jsonl(outputs["best_paths"], paths)
        write_trl_sft(outputs["best_paths_trl"], paths)
    else:
        outputs["pairs"] = out
        write_pairs(out, pairs, form)
        if best_paths is not None:
            outputs["best_paths"] = best_paths
            write_jsonl(best_paths, paths)
    drops = {k: counts[k] for k in DROP_REASONS if counts[k]}
    return Result(outputs=outputs, seconds=time.perf_counter() - t0, counts={
        "pairs": len(pairs), "dropped": sum(drops.values()), **{f"dropped_{k}": v for k, v in drops.items()},
        "best_paths": len(paths), "seeds": len({p.seed for p in pairs}),
        "unparsed_decisions_left_out": counts["unparsed_decisions"]})


# why a candidate pair was left out (``counts`` keys of the functions above)
DROP_REASONS = ("beyond_negatives", "below_margin", "same_reply", "duplicate", "seed_cap")


def no_pairs_message(source: str | Path, counts: Counter[str]) -> str:
    """Why a source gave no pairs, as one line."""
    why = "no decision had a dropped candidate that passed the filters"
    left = ", ".join(f"{k.replace('_', ' ')} {counts[k]}" for k in DROP_REASONS if counts[k])
    if left:
        why += f" (left out: {left})"
    if counts["unparsed_decisions"]:
        why += (f"; {counts['unparsed_decisions']} decisions were left out because the judge's answer was "
                "unparsed (--include-unparsed keeps them)")
    if counts["transcripts"]:
        why = (f"none of the {counts['transcripts']} transcripts under {Path(source) / 'full'} has a dropped "
               "candidate line (a TAB, then '🤖❌: ', after a '🤖✅: ' line)")
    return f"{source}: no preference pairs ({why})"

"""Search trees as data: nodes (:class:`schema.SearchNode`), JSONL files, best paths.

A tree file holds every node of one seed's search, one JSON object per line, parents before
children. The root is the seed user turn. Assistant siblings share the judge decision that chose
among them; ``kept`` marks the nodes of the best path (the path the search returned).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from sage_dialog.core.errors import UserError
from sage_dialog.core.io import read_jsonl, write_jsonl
from sage_dialog.core.schema import Dialog, SearchNode, Turn


def read_tree(path: str | Path) -> list[SearchNode]:
    """The nodes of one tree file, validated, with the parent links checked."""
    nodes = list(read_jsonl(path, SearchNode))
    check_tree(nodes, str(path))
    return nodes


def write_tree(path: str | Path, nodes: Iterable[SearchNode]) -> int:
    """Write a tree atomically; returns the number of nodes."""
    return write_jsonl(path, nodes)


def check_tree(nodes: Sequence[SearchNode], where: str = "tree") -> None:
    """Raise :class:`UserError` unless there is one root and every parent precedes its children."""
    seen: set[str] = set()
    roots = 0
    for i, n in enumerate(nodes, 1):
        if n.id in seen:
            raise UserError(f"{where}: record {i}: field id: duplicate node id {n.id!r}")
        if n.parent is None:
            roots += 1
        elif n.parent not in seen:
            raise UserError(f"{where}: record {i}: field parent: unknown parent {n.parent!r}")
        seen.add(n.id)
    if roots != 1:
        raise UserError(f"{where}: expected one root node, found {roots}")


def children_of(nodes: Iterable[SearchNode]) -> dict[str | None, list[SearchNode]]:
    out: dict[str | None, list[SearchNode]] = defaultdict(list)
    for n in nodes:
        out[n.parent].append(n)
    return out


def best_path(nodes: Sequence[SearchNode]) -> list[SearchNode]:
    """Follow kept children from the root (the highest-scored one when several are kept)."""
    kids = children_of(nodes)
    path = [kids[None][0]]
    while True:
        kept = [c for c in kids.get(path[-1].id, []) if c.kept]
        if not kept:
            return path
        path.append(max(kept, key=lambda c: c.score if c.score is not None else float("-inf")))


def node_turn(n: SearchNode) -> Turn:
    return Turn(role=n.role, text=n.text, state=n.state, action=n.action)


def path_dialog(nodes: Sequence[SearchNode], *, meta: dict[str, Any] | None = None) -> Dialog:
    """The best path of a tree as a SAC dialog (id = tree name)."""
    path = best_path(nodes)
    return Dialog(id=path[0].tree, turns=[node_turn(n) for n in path], meta=dict(meta or {}))


def decisions(nodes: Sequence[SearchNode]) -> list[tuple[SearchNode, list[SearchNode]]]:
    """Each judged decision on the best path: (kept candidate, dropped siblings), in dialog order."""
    kids = children_of(nodes)
    out = []
    for n in best_path(nodes)[1:]:
        if n.role != "assistant":
            continue
        sib = [c for c in kids[n.parent] if c.role == "assistant" and c.id != n.id and not c.sampling.get("lookahead")]
        out.append((n, sib))
    return out

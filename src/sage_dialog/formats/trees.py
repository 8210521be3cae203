"""Search trees as files: the JSONL that ``sage-dialog search`` writes, one node a line.

Every reader of trees (``prefs``, ``validate``, the search's own resume) goes through
:func:`read_tree_nodes`, which checks what a tree must be: every node valid, node ids unique within
their tree, every parent present in the same tree, one root a tree. A node that breaks one of these
is a problem naming file, record and field, never silently dropped or counted twice.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sage_dialog.core.errors import UserError, where
from sage_dialog.core.io import format_validation_error
from sage_dialog.core.schema import SearchNode
from sage_dialog.formats._common import iter_jsonl_lines

Located = tuple[Path, int, SearchNode]  # file, 1-based line, node


def tree_files(source: Path) -> list[Path]:
    """The JSONL files of ``source`` (itself, or every ``*.jsonl`` under a folder, sorted)."""
    if not source.exists():
        raise UserError(f"{source}: no such file or folder")
    return [source] if source.is_file() else sorted(source.rglob("*.jsonl"))


def collect_nodes(source: str | Path, problems: list[str]) -> dict[str, list[Located]]:
    """Nodes of every tree under ``source`` by tree name; bad lines become ``problems``.

    Lines that are not nodes (best paths, manifests beside the trees) are skipped.
    """
    trees: dict[str, list[Located]] = {}
    for f in tree_files(Path(source)):
        for lineno, obj in iter_jsonl_lines(f, problems):
            if not isinstance(obj, dict) or obj.get("kind") != "node":
                continue
            try:
                node = SearchNode.model_validate(obj)
            except ValidationError as e:
                problems.extend(format_validation_error(f, lineno, e))
                continue
            if node.score is not None and not math.isfinite(node.score):
                # a margin of inf - inf is NaN: prefs would write pairs that validate refuses
                sign = "-" if node.score < 0 else ""
                problems.append(f"{where(f, lineno, 'score')}: {sign}Infinity is not a finite number (a judge score is)")
                continue
            trees.setdefault(node.tree, []).append((f, lineno, node))
    # an empty best-path file is no problem when trees sit beside it
    problems[:] = [p for p in problems if not (trees and p.endswith("empty file, expected JSONL records"))]
    return trees


def tree_problems(name: str, nodes: list[Located]) -> list[str]:
    """What is wrong with one tree: duplicate ids, parents that are not in the tree, root count."""
    problems: list[str] = []
    first: dict[str, tuple[Path, int]] = {}
    for f, lineno, n in nodes:
        if n.id in first:
            pf, pl = first[n.id]
            at = f"record {pl}" if pf == f else where(pf, pl)
            problems.append(f"{where(f, lineno, 'id')}: duplicate node id {n.id!r} in tree {name!r} (first in {at})")
        else:
            first[n.id] = (f, lineno)
    for f, lineno, n in nodes:
        if n.parent is not None and n.parent not in first:
            problems.append(f"{where(f, lineno, 'parent')}: parent {n.parent!r} is not a node of tree {name!r}")
    problems.extend(_cycles(name, nodes, first))
    roots = [(f, lineno) for f, lineno, n in nodes if n.parent is None]
    if len(roots) != 1:
        f = nodes[0][0]
        problems.append(f"{f}: tree {name!r}: expected one root node (parent null), found {len(roots)}")
    return problems


def _cycles(name: str, nodes: list[Located], first: dict[str, tuple[Path, int]]) -> list[str]:
    """One problem per cycle of parent links (a node that is its own parent, n5 -> n6 -> n5): such
    nodes never reach the root, and following their parents would never end. Linear time."""
    parent: dict[str, str | None] = {}
    for _, _, n in nodes:
        parent.setdefault(n.id, n.parent)
    children: dict[str, list[str]] = {}
    for nid, par in parent.items():
        if par is not None:
            children.setdefault(par, []).append(nid)
    reached = {nid for nid, par in parent.items() if par is None}
    todo = list(reached)
    while todo:
        for kid in children.get(todo.pop(), []):
            if kid not in reached:
                reached.add(kid)
                todo.append(kid)
    problems: list[str] = []
    done: set[str] = set()  # unreached nodes already explained (on a reported cycle or leading to one)
    for _, _, n in nodes:
        if n.id in reached or n.id in done:
            continue
        chain: list[str] = []
        on_chain: set[str] = set()
        cur: str | None = n.id
        while cur is not None and cur in parent and cur not in on_chain and cur not in done:
            chain.append(cur)
            on_chain.add(cur)
            cur = parent[cur]
        done.update(chain)
        if cur is None or cur not in on_chain:
            continue  # a missing parent (reported above) or a cycle already reported
        cycle = chain[chain.index(cur):]
        f, lineno = first[cycle[0]]
        if len(cycle) == 1:
            problems.append(f"{where(f, lineno, 'parent')}: node {cur!r} is its own parent in tree {name!r}")
        else:
            ring = " -> ".join([*cycle, cycle[0]])
            problems.append(f"{where(f, lineno, 'parent')}: parent links form a cycle ({ring}) that never "
                            f"reaches the root of tree {name!r}")
    return problems


def read_tree_nodes(source: str | Path) -> dict[str, list[SearchNode]]:
    """Every tree under ``source``, checked (a :class:`UserError` listing every problem otherwise)."""
    problems: list[str] = []
    trees = collect_nodes(source, problems)
    for name, nodes in trees.items():
        problems.extend(tree_problems(name, nodes))
    if problems:
        raise UserError(problems)
    if not trees:
        raise UserError(f"{source}: no search-tree nodes found (expected JSONL written by `sage-dialog search`)")
    return {name: [n for _, _, n in nodes] for name, nodes in trees.items()}


def check_trees(path: Path) -> tuple[list[str], int]:
    """Every problem of the trees under ``path`` and the number of trees (``sage-dialog validate``)."""
    problems: list[str] = []
    trees = collect_nodes(path, problems)
    for name, nodes in trees.items():
        problems.extend(tree_problems(name, nodes))
    if not trees and not problems:
        problems.append(f"{path}: no search-tree nodes found (expected JSONL written by `sage-dialog search`)")
    return problems, len(trees)


def looks_like_trees(path: Path) -> bool:
    """A folder of a search run (``trees/``) or of tree JSONL files."""
    if (path / "trees").is_dir():
        return True
    first = next(iter(sorted(path.glob("*.jsonl"))), None)
    return first is not None and _first_kind(first) == "node"


def _first_kind(path: Path) -> Any:
    from sage_dialog.core.io import loads_json
    from sage_dialog.core.limits import bounded_lines

    with path.open("rb") as fh:
        for _, raw in bounded_lines(fh, path):
            if raw.strip():
                try:
                    obj = loads_json(raw.decode("utf-8"), str(path))
                except (UnicodeDecodeError, UserError):
                    return None
                return obj.get("kind") if isinstance(obj, dict) else None
    return None

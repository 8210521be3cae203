"""The one YAML loader: safe types only, with bounded nesting and bounded alias expansion.

PyYAML's ``safe_load`` shares one Python object for every use of an anchor, so nine levels of nine
aliases (a "billion laughs" bomb, ~1 KB of text) load quickly and small - and then blow up whatever
walks the result (config validation, fingerprints, JSON dumps). Its composer also recurses once per
nesting level, so YAML nested 20,000 deep ends in a ``RecursionError``. :func:`load_yaml` composes
the node graph first and refuses both, with one line naming the source:

* more than :data:`MAX_DEPTH` nested collections;
* a document that would expand (every alias counted as a copy) to more than :data:`MAX_NODES`
  nodes or :data:`MAX_CHARS` characters of scalars.

Real configs and mock scripts are far below these limits, merge keys (``<<: *defaults``) included.
"""

from __future__ import annotations

from typing import Any

import yaml

from sage_dialog.core.errors import UserError
from sage_dialog.core.limits import check_unicode, has_surrogate_escape

MAX_DEPTH = 200
MAX_NODES = 200_000
MAX_CHARS = 64 * 2**20


class _TooDeep(Exception):
    pass


class _Cyclic(Exception):
    pass


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader whose composer counts nesting depth (the parser itself is not recursive)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _TooDeep(self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _expanded_size(root: yaml.Node) -> tuple[int, int]:
    """Nodes and scalar characters of the tree the graph stands for (aliases expanded), computed
    once per node (memoized by identity), children before parents, without recursion; stops
    counting past the limits."""
    memo: dict[int, tuple[int, int]] = {}
    opened: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if id(node) in memo:
            continue
        if not done and id(node) in opened:  # depth first: an opened, unfinished node is an ancestor
            raise _Cyclic
        if isinstance(node, yaml.ScalarNode):
            memo[id(node)] = (1, len(node.value))
            continue
        kids: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            kids = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            kids = [x for kv in node.value for x in kv]
        if not done:
            opened.add(id(node))
            stack.append((node, True))
            stack.extend((k, False) for k in kids if id(k) not in memo)
            continue
        n, c = 1, 0
        for k in kids:
            kn, kc = memo[id(k)]
            n, c = min(n + kn, MAX_NODES + 1), min(c + kc, MAX_CHARS + 1)
        memo[id(node)] = (n, c)
    return memo.get(id(root), (1, 0))


def load_yaml(text: str, source: object) -> Any:
    """Parse one YAML document with safe types; every way it can fail (syntax, nesting, alias
    expansion, a lone surrogate) is a :class:`UserError` starting with ``source``."""
    loader = _BoundedLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except _TooDeep as e:
            mark = e.args[0]
            raise UserError(f"{source}: malformed YAML (line {mark.line + 1}, column {mark.column + 1}): "
                            f"nested more than {MAX_DEPTH} deep") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            loc = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            raise UserError(f"{source}: malformed YAML{loc}: {getattr(e, 'problem', None) or e}") from None
        if node is None:
            return None
        try:
            nodes, chars = _expanded_size(node)
        except _Cyclic:
            raise UserError(f"{source}: malformed YAML: an alias refers to a collection that contains it") from None
        if nodes > MAX_NODES or chars > MAX_CHARS:
            raise UserError(f"{source}: YAML expands through its aliases (&anchor / *alias) to more than "
                            f"{MAX_NODES} values or {MAX_CHARS // 2**20} MiB of text; refusing it (an alias bomb?)")
        try:
            data = loader.construct_document(node)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            loc = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            raise UserError(f"{source}: malformed YAML{loc}: {getattr(e, 'problem', None) or e}") from None
    finally:
        loader.dispose()
    if has_surrogate_escape(text):
        check_unicode(data, str(source))
    return data


__all__ = ["MAX_CHARS", "MAX_DEPTH", "MAX_NODES", "load_yaml"]

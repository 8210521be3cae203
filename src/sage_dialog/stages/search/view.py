"""The search-tree view: trees as indented text for the terminal, or as one self-contained HTML page.

Each node shows its role, the latent tags of its turn (state -> action), a shortened reply, the judge
score and whether it is on the best path (``kept``). A decision of a latent search (``latent``,
``mcts``) also shows the action branches it weighed, on the node the decision followed: each action
with its prior, visits, value and the replies that realised it, and which one the search chose.

Dialog text is untrusted: in the terminal control characters are shown escaped, in the page every
piece of it is HTML-escaped, and the page has no script, external asset or network access (its
Content-Security-Policy forbids them too). The page is bounded: at most ``max_trees`` trees, each
reply cut at :data:`HTML_TEXT_LIMIT` characters, with a line saying what was left out.

``sage-dialog trees`` prints or writes these views; ``sage-dialog search`` writes ``trees.html``
beside the ``trees/`` it writes.
"""

from __future__ import annotations

import html
import re
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from sage_dialog.core import io
from sage_dialog.core.errors import UserError
from sage_dialog.core.schema import ActionBranch, SearchNode, Tags

DEFAULT_MAX_TREES = 50
TEXT_WIDTH = 100  # characters of a reply in the text view (and in a collapsed HTML node)
HTML_TEXT_LIMIT = 4000  # characters of one reply on the page
_REPLIES_SHOWN = 8  # reply ids listed per action branch in the text view

Trees = Mapping[str, Sequence[SearchNode]]

# control characters would move the terminal's cursor or colour it (ANSI escapes): shown escaped
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def tree_source(path: str | Path) -> Path:
    """Where the trees of ``path`` are: the ``trees/`` of a search output folder, else ``path`` itself."""
    p = Path(path)
    return p / "trees" if p.is_dir() and (p / "trees").is_dir() else p


def load_trees(path: str | Path) -> dict[str, list[SearchNode]]:
    """Every tree of ``path``: a tree JSONL file, a folder of them, or a search output folder (its
    ``trees/``). Validated by :func:`sage_dialog.formats.trees.read_tree_nodes` (:class:`UserError`)."""
    from sage_dialog.formats.trees import read_tree_nodes

    return read_tree_nodes(tree_source(path))


def pick_tree(trees: Trees, name: str, source: str | Path = "") -> dict[str, list[SearchNode]]:
    """Only the tree called ``name`` (:class:`UserError` naming the trees there are otherwise)."""
    if name not in trees:
        names = list(trees)
        shown = ", ".join(names[:10]) + (f", ... ({len(names)} in all)" if len(names) > 10 else "")
        raise UserError(f"--tree {name}: no tree of that name in {source or 'the input'}; trees: {shown}")
    return {name: list(trees[name])}


def _clean(text: str, *, newlines: bool = False) -> str:
    text = text.replace("\r\n", "\n")
    if not newlines:
        text = " ".join(text.split())
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else "\ufffd", text)


def _short(text: str, width: int = TEXT_WIDTH) -> str:
    t = _clean(text)
    return t if len(t) <= width else t[: width - 1] + "\u2026"


def _num(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.3f}" if abs(x) < 1000 else f"{x:.4g}"


def format_tags(tags: Tags | None) -> str:
    """``motivation/emotion [topics] key=value`` (``-`` for an absent field; ``""`` for no tags)."""
    if tags is None or tags.is_empty():
        return ""
    parts = [f"{tags.motivation or '-'}/{tags.emotion or '-'}"]
    if tags.topics is not None:
        parts.append("[" + ", ".join(tags.topics) + "]")
    parts += [f"{k}={v}" for k, v in tags.extra.items()]
    return _clean(" ".join(parts))


def _turn_tags(n: SearchNode) -> str:
    state, action = format_tags(n.state), format_tags(n.action)
    if state and action:
        return f"{state} -> {action}"
    return f"state {state}" if state else f"action {action}" if action else ""


def _walk(nodes: Sequence[SearchNode]) -> Iterator[tuple[str, SearchNode, int]]:
    """("enter" | "leave", node, depth) from the root; iterative, so a deep or hostile tree cannot exhaust
    the stack, and a node is entered once even if parent links loop. Siblings the search did not go on
    from come first (in file order), so the alternatives of a decision sit together above the
    continuation."""
    kids: dict[str | None, list[SearchNode]] = defaultdict(list)
    for n in nodes:
        kids[n.parent].append(n)
    roots = kids.get(None, [])
    if not roots:
        return
    seen = {roots[0].id}
    stack: list[tuple[SearchNode, int, bool]] = [(roots[0], 0, False)]
    while stack:
        node, depth, left = stack.pop()
        if left:
            yield "leave", node, depth
            continue
        yield "enter", node, depth
        stack.append((node, depth, True))
        for c in reversed(sorted(kids.get(node.id, []), key=lambda c: c.id in kids)):
            if c.id not in seen:
                seen.add(c.id)
                stack.append((c, depth + 1, False))


def _stats(nodes: Sequence[SearchNode]) -> tuple[int, int, int]:
    """(nodes reachable from the root, decisions with action branches, nodes not reachable)."""
    reached = sum(1 for ev, _, _ in _walk(nodes) if ev == "enter")
    latent = sum(1 for n in nodes if n.branches)
    return reached, latent, len(nodes) - reached


def _heading(name: str, nodes: Sequence[SearchNode]) -> str:
    reached, latent, lost = _stats(nodes)
    bits = [f"{reached} nodes"]
    if latent:
        bits.append(f"{latent} latent decision{'s' * (latent != 1)}")
    if lost:
        bits.append(f"{lost} node{'s' * (lost != 1)} not reachable from the root, not shown")
    return f"{_clean(name)} ({'; '.join(bits)})"


def _omitted(total: int, shown: int) -> str:
    left = total - shown
    return (f"{left} more tree{'s' * (left != 1)} not shown (of {total}; "
            f"raise --max-trees or pick one with --tree NAME)")


def _check_cap(max_trees: int) -> None:
    if max_trees < 1:
        raise UserError(f"--max-trees {max_trees}: must be at least 1")


# ---------------------------------------------------------------------------------------------- text


def _branch_lines(branches: Sequence[ActionBranch], indent: str) -> list[str]:
    actions = [format_tags(b.action) or "(no tags)" for b in branches]
    w = min(max(len(a) for a in actions), 40)
    lines = [f"{indent}actions weighed ({len(branches)}; => chosen):"]
    for i, (b, a) in enumerate(zip(branches, actions, strict=True)):
        replies = " ".join(_clean(r) for r in b.replies[:_REPLIES_SHOWN])
        if len(b.replies) > _REPLIES_SHOWN:
            replies += f" +{len(b.replies) - _REPLIES_SHOWN}"
        lines.append(f"{indent}  {'=>' if b.chosen else '  '} #{i} {_short(a, 40).ljust(w)}  prior {_num(b.prior)}"
                     f"  visits {b.visits}  value {_num(b.value)}  replies {replies or '-'}")
    return lines


def _node_meta(n: SearchNode) -> list[str]:
    """The branch, judge score and non-chosen judge outcome of a node, as short phrases (both views)."""
    meta = []
    if n.branch is not None:
        meta.append(f"action #{n.branch}")
    if n.score is not None:
        meta.append(f"score {_num(n.score)}")
    if n.decision is not None and n.decision.outcome != "chosen":
        meta.append(f"judge {n.decision.outcome}")
    return meta


def _node_line(n: SearchNode, indent: str, width: int) -> str:
    head = [("*" if n.kept else "-"), _clean(n.id), n.role]
    tags = _turn_tags(n)
    if tags:
        head.append(f"[{tags}]")
    head += _node_meta(n)
    return f"{indent}{' '.join(head)}: {_short(n.text, width)}"


def render_text(trees: Trees, *, max_trees: int = DEFAULT_MAX_TREES, width: int = TEXT_WIDTH) -> str:
    """The trees as indented plain text (see the module docstring); at most ``max_trees`` of them."""
    _check_cap(max_trees)
    out = ["legend: * kept (on the best path), - dropped; => the action the search chose", ""]
    names = list(trees)
    for name in names[:max_trees]:
        nodes = trees[name]
        out.append(f"== {_heading(name, nodes)}")
        for ev, n, depth in _walk(nodes):
            if ev != "enter":
                continue
            indent = "  " * depth
            out.append(_node_line(n, indent, width))
            if n.branches:
                out += _branch_lines(n.branches, indent + "    ")
        out.append("")
    if len(names) > max_trees:
        out.append(_omitted(len(names), max_trees))
    return "\n".join(out).rstrip("\n") + "\n"


# ---------------------------------------------------------------------------------------------- HTML

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:1.5em;color:#222;max-width:72em}
h1{font-size:1.4em}.legend,.omitted{color:#555}
details.tree{border:1px solid #ccc;border-radius:4px;margin:.6em 0;padding:.3em .6em}
details.tree>summary{font-weight:600;cursor:pointer}
ul.nodes{list-style:none;padding-left:1.4em;margin:.2em 0;border-left:1px dotted #bbb}
li.node{margin:.25em 0}li.node>details>summary{cursor:pointer}
.dropped>details>summary,.dropped .text{color:#777}
.mark{font-weight:700}.kept>details>summary .mark{color:#2e7d32}.dropped .mark{color:#c62828}
.role{font-weight:600}.id,.meta{color:#666;font-size:.9em}.tags{color:#1565c0;font-family:monospace}
.text{white-space:pre-wrap;margin:.2em 0 .2em 1.2em}
table.branches{border-collapse:collapse;margin:.3em 0 .3em 1.2em;font-size:.92em}
table.branches caption{text-align:left;color:#555}
table.branches th,table.branches td{border:1px solid #ddd;padding:.15em .5em;text-align:left}
table.branches td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.chosen{background:#e8f5e9;font-weight:600}
"""


def _e(s: object) -> str:
    return html.escape(str(s), quote=True)


def _html_branches(branches: Sequence[ActionBranch], anchors: Mapping[str, str]) -> str:
    rows = []
    for i, b in enumerate(branches):
        links = " ".join(f'<a href="#{anchors[r]}">{_e(_clean(r))}</a>' if r in anchors else _e(_clean(r))
                         for r in b.replies)
        rows.append(f'<tr class="{"chosen" if b.chosen else "other"}"><td class="n">{i}</td>'
                    f'<td class="tags">{_e(format_tags(b.action) or "(no tags)")}</td>'
                    f'<td class="n">{_e(_num(b.prior))}</td><td class="n">{b.visits}</td>'
                    f'<td class="n">{_e(_num(b.value))}</td><td>{links or "-"}</td>'
                    f'<td>{"chosen" if b.chosen else ""}</td></tr>')
    return ('<table class="branches"><caption>actions weighed at this decision</caption>'
            "<tr><th>#</th><th>action</th><th>prior</th><th>visits</th><th>value</th><th>replies</th><th></th></tr>"
            + "".join(rows) + "</table>")


def _html_node(n: SearchNode, anchor: str, anchors: Mapping[str, str]) -> str:
    meta = _node_meta(n)
    tags = _turn_tags(n)
    summary = (f'<span class="mark">{"&#9733;" if n.kept else "&#10007;"}</span> <span class="role">{_e(n.role)}</span>'
               f' <span class="id">{_e(_clean(n.id))}</span>'
               + (f' <span class="tags">{_e(tags)}</span>' if tags else "")
               + (f' <span class="meta">{_e(", ".join(meta))}</span>' if meta else "")
               + f": {_e(_short(n.text))}")
    body = ""
    if _short(n.text) != _clean(n.text):  # the whole reply, when the line above shows it cut
        text = _clean(n.text, newlines=True)
        if len(text) > HTML_TEXT_LIMIT:
            text = text[:HTML_TEXT_LIMIT] + f"\u2026 ({len(text) - HTML_TEXT_LIMIT} more characters not shown)"
        body = f'<div class="text">{_e(text)}</div>'
    if n.branches:
        body += _html_branches(n.branches, anchors)
    return (f'<li class="node {"kept" if n.kept else "dropped"} {_e(n.role)}" id="{anchor}">'
            f'<details{" open" if n.kept else ""}><summary>{summary}</summary>{body}')


def render_html(trees: Trees, *, max_trees: int = DEFAULT_MAX_TREES, title: str = "Search trees") -> str:
    """One self-contained page of the trees (see the module docstring); at most ``max_trees`` of them."""
    _check_cap(max_trees)
    names = list(trees)
    body = [f"<h1>{_e(_clean(title))}</h1>",
            f'<p class="legend">{len(names)} tree{"s" * (len(names) != 1)}. &#9733; kept (on the best path), '
            "&#10007; dropped; click a line to fold it. A latent decision lists the actions it weighed, "
            "with their prior, visits, value and the replies that realised them; the chosen one is "
            "highlighted.</p>"]
    for t, name in enumerate(names[:max_trees]):
        nodes = trees[name]
        # anchors are made here (not from node ids, which are data) so links are always well formed
        anchors = {n.id: f"t{t}-n{i}" for i, n in enumerate(nodes)}
        body.append(f'<details class="tree" id="t{t}"{" open" if t == 0 else ""}>'
                    f"<summary>{_e(_heading(name, nodes))}</summary><ul class=\"nodes\">")
        for ev, n, _ in _walk(nodes):
            if ev == "enter":
                body.append(_html_node(n, anchors[n.id], anchors) + '<ul class="nodes">')
            else:
                body.append("</ul></details></li>")
        body.append("</ul></details>")
    if len(names) > max_trees:
        body.append(f'<p class="omitted">{_e(_omitted(len(names), max_trees))}</p>')
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            # no script, frame or remote asset can run or load even if something slipped through
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(_clean(title))}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def write_html(trees: Trees, dest: str | Path, *, max_trees: int = DEFAULT_MAX_TREES,
               title: str = "Search trees") -> int:
    """Render the page, then write it to ``dest`` atomically; returns the number of trees shown."""
    page = render_html(trees, max_trees=max_trees, title=title)  # rendered first: nothing partial on error
    with io.atomic_write(dest) as fh:
        fh.write(page)
    return min(len(trees), max_trees)

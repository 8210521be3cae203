"""Helpers shared by the format modules: problem lines, streamed JSONL checks, dialog <-> text.

A *problem* is one line naming file, record and field (``errors.where``) followed by what is wrong.
Checkers collect every problem instead of stopping at the first, so ``sage-dialog validate`` can list
them all; readers raise :class:`UserError` with the same lines.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from sage_dialog.core import sac
from sage_dialog.core.errors import UserError, where
from sage_dialog.core.io import loads_json
from sage_dialog.core.limits import bounded_lines
from sage_dialog.core.schema import Dialog, Tags, Turn

Style = Literal["raw", "annotated", "chained"]


def short(text: str, n: int = 40) -> str:
    """``repr`` of a string cut to ``n`` characters, for error lines."""
    return repr(text if len(text) <= n else text[:n] + "…")


def type_name(obj: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(obj), type(obj).__name__
    )


def require_file(path: Path) -> None:
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.is_dir():
        raise UserError(f"{path}: is a directory, expected a file")


def iter_jsonl_lines(path: str | Path, problems: list[str]) -> Iterator[tuple[int, Any]]:
    """Stream ``(line_number, obj)`` from a JSONL file, appending a problem for every bad line.

    Unlike :func:`io.iter_jsonl_raw` this does not stop at the first bad line (it is used by
    validation, which lists every problem). Lines are read as bytes so one non-UTF-8 line does not
    hide the rest. An empty file is a problem.
    """
    p = Path(path)
    require_file(p)
    seen = False
    with p.open("rb") as fh:
        for lineno, raw in bounded_lines(fh, p):
            try:
                line = raw.decode("utf-8")
                if lineno == 1:
                    line = line.removeprefix("\ufeff")
            except UnicodeDecodeError as e:
                problems.append(f"{where(p, lineno)}: not UTF-8 text ({e.reason} at byte {e.start})")
                seen = True
                continue
            if not line.strip():
                continue
            seen = True
            try:
                obj = loads_json(line.rstrip("\r\n"), where(p, lineno), line_numbers=False)
            except UserError as e:
                problems.extend(e.problems)
                continue
            yield lineno, obj
    if not seen:
        problems.append(f"{p}: empty file, expected JSONL records")


def stream_jsonl(path: str | Path, convert: Callable[[Any, int], Any]) -> Iterator[Any]:
    """Stream converted records; raise a :class:`UserError` at the first bad line."""
    problems: list[str] = []
    for lineno, obj in iter_jsonl_lines(path, problems):
        if problems:
            raise UserError(problems)
        yield convert(obj, lineno)
    if problems:
        raise UserError(problems)


# ---------------------------------------------------------------------------------------------
# dialogs as text


def dialog_style(d: Dialog) -> Style:
    """``chained`` if an assistant turn carries a state, ``annotated`` if any turn has tags, else ``raw``."""
    if any(t.role == "assistant" and t.state is not None for t in d.turns):
        return "chained"
    if any(t.state is not None or t.action is not None for t in d.turns):
        return "annotated"
    return "raw"


def turn_content(turn: Turn, style: Style) -> str:
    """The text of one turn as it appears in a chat file of ``style``.

    raw: the text; annotated: ``{motivation: .., emotion: .., topic: [..]} text`` with the user's
    ``state`` or the assistant's ``action``; chained: user turns plain, assistant turns
    ``{u_..} {a_..} text``.
    """
    if style == "raw" or turn.role == "system":
        return turn.text
    if style == "annotated":
        tags = turn.state if turn.role == "user" else turn.action
        return sac.render_annotated(turn.text, tags)
    if turn.role == "user":
        return turn.text
    return sac.render_turn(turn.text, state=turn.state, action=turn.action)


# Readers check a record and then convert it, parsing each value twice; a small cache (one record's
# values) halves the work. Cached results are shared, so callers copy the Tags they hand out.
_parse = functools.lru_cache(maxsize=256)(sac.parse)


def _copy(tags: Tags | None) -> Tags | None:
    return None if tags is None else tags.model_copy(deep=True)


def content_to_turn(role: Literal["system", "user", "assistant"], content: str) -> Turn:
    """Parse the tag blocks in front of one chat message into a :class:`Turn`.

    A user turn's block (plain or ``u_*``) becomes its ``state``; an assistant turn's ``u_*`` block
    its ``state`` and its ``a_*`` or plain block its ``action``. System text is kept verbatim.
    """
    if role == "system":
        return Turn(role=role, text=content)
    parsed = _parse(content)
    if not parsed.has_tags:
        return Turn(role=role, text=content)
    if role == "user":
        return Turn(role=role, text=parsed.reply, state=_copy(parsed.plain or parsed.state))
    return Turn(role=role, text=parsed.reply, state=_copy(parsed.state), action=_copy(parsed.action or parsed.plain))


def looks_like_broken_tags(content: str) -> bool:
    """True when text starts like a tag block that :func:`sac.parse` could not read."""
    return content.lstrip().startswith("{") and not _parse(content).has_tags


def tags_problem(content: str) -> str | None:
    if looks_like_broken_tags(content):
        return f"tag block does not parse: {short(content.lstrip())}"
    return None


def role_order_problem(roles: list[str], names: dict[str, str] | None = None) -> tuple[int, str] | None:
    """First position where roles break ``[system] user assistant user ...``; names map role -> shown word."""
    nm = names or {"user": "user", "assistant": "assistant", "system": "system"}
    expected = "user"
    for i, r in enumerate(roles):
        if r == "system" and i == 0:
            continue
        if r == "system":
            return i, f"system turn allowed only first, got {nm['system']} at turn {i}"
        if r != expected:
            return i, f"expected {nm[expected]}, got {nm.get(r, r)} (turns alternate starting with {nm['user']})"
        expected = "assistant" if expected == "user" else "user"
    return None


def dialog_problems(path: object, record: object, d: Dialog, *, field_prefix: str = "turns") -> list[str]:
    """Semantic checks of a schema Dialog: non-empty, role order, tag values that render."""
    out: list[str] = []
    if not d.turns:
        out.append(f"{where(path, record, field_prefix)}: empty dialog")
        return out
    bad = role_order_problem([t.role for t in d.turns])
    if bad:
        out.append(f"{where(path, record, f'{field_prefix}[{bad[0]}].role')}: {bad[1]}")
    for i, t in enumerate(d.turns):
        for name in ("state", "action"):
            tags: Tags | None = getattr(t, name)
            if tags is None:
                continue
            try:
                sac.render_block(tags, "state")
            except sac.SacError as e:
                out.append(f"{where(path, record, f'{field_prefix}[{i}].{name}')}: {e}")
    return out

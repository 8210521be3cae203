"""TRL conversational SFT data (FORMATS.md section 5): JSONL of ``{"messages": [{"role", "content"}]}``.

Assistant contents of a chained dialog carry their SAC tags (``{u_..} {a_..} reply``, rendered by
:mod:`sac`); user contents are plain. Reading parses the tags back into :class:`Turn` fields. Rows
carry no id (TRL would see it as a column), so read dialogs are named ``<file stem>_<line>``.
Reading is streamed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from sage_dialog.core.errors import UserError, where
from sage_dialog.core.schema import Dialog, Turn
from sage_dialog.formats import _common
from sage_dialog.formats._common import (
    Style,
    content_to_turn,
    dialog_style,
    role_order_problem,
    tags_problem,
    turn_content,
    type_name,
)

ROLES = ("system", "user", "assistant")


def dialog_to_messages(d: Dialog, style: Style | Literal["auto"] = "auto") -> list[dict[str, str]]:
    """Chat messages of a dialog; assistant contents carry tags as in ``style`` (auto: from the dialog)."""
    st: Style = dialog_style(d) if style == "auto" else style
    return turns_to_messages(d.turns, st)


def turns_to_messages(turns: Sequence[Turn], style: Style = "chained") -> list[dict[str, str]]:
    """Chat messages of some turns (a dialog's, a preference pair's history or answer) in ``style``."""
    return [{"role": t.role, "content": turn_content(t, style)} for t in turns]


def messages_to_dialog(messages: list[dict[str, Any]], dialog_id: str) -> Dialog:
    """A dialog from well-formed chat messages (tags parsed out of the contents)."""
    return Dialog(id=dialog_id, turns=[content_to_turn(m["role"], m["content"]) for m in messages])


def messages_problems(path: object, record: object, messages: Any, field: str = "messages") -> list[str]:
    """Every problem of one ``messages`` list: shape, roles, order, tag blocks."""
    if not isinstance(messages, list):
        return [f"{where(path, record, field)}: expected an array of messages, got {type_name(messages)}"]
    if not messages:
        return [f"{where(path, record, field)}: empty dialog"]
    out: list[str] = []
    roles: list[str] = []
    for j, m in enumerate(messages):
        f = f"{field}[{j}]"
        if not isinstance(m, dict):
            out.append(f"{where(path, record, f)}: expected a message object, got {type_name(m)}")
            roles.append("?")
            continue
        for k in m:
            if k not in ("role", "content"):
                out.append(f"{where(path, record, f)}: unexpected key {k!r} (a message has only role and content)")
        role, content = m.get("role"), m.get("content")
        if "role" not in m:
            out.append(f"{where(path, record, f + '.role')}: missing")
        elif role not in ROLES:
            out.append(f"{where(path, record, f + '.role')}: unknown role {role!r} (expected user, assistant or system)")
        if "content" not in m:
            out.append(f"{where(path, record, f + '.content')}: missing")
        elif not isinstance(content, str):
            out.append(f"{where(path, record, f + '.content')}: expected a string, got {type_name(content)}")
        elif (tp := tags_problem(content)) is not None:
            out.append(f"{where(path, record, f + '.content')}: {tp}")
        roles.append(role if role in ROLES else "?")
    if "?" not in roles and (bad := role_order_problem(roles)):
        out.append(f"{where(path, record, f'{field}[{bad[0]}].role')}: {bad[1]}")
    return out


def row_problems(path: object, lineno: int, obj: Any) -> list[str]:
    if not isinstance(obj, dict):
        return [f"{where(path, lineno)}: expected an object, got {type_name(obj)}"]
    if "messages" not in obj:
        return [f"{where(path, lineno, 'messages')}: missing"]
    out = [f"{where(path, lineno, k)}: unexpected key (a row has only messages)" for k in obj if k != "messages"]
    return out + messages_problems(path, lineno, obj["messages"])


def check_trl_sft(path: str | Path) -> tuple[list[str], int]:
    """All problems of a TRL messages JSONL file, streamed; and its number of rows."""
    problems: list[str] = []
    n = 0
    for lineno, obj in _common.iter_jsonl_lines(path, problems):
        problems.extend(row_problems(path, lineno, obj))
        n += 1
    return problems, n


def read_trl_sft(path: str | Path) -> Iterator[Dialog]:
    """Stream dialogs from a TRL messages JSONL file; the first bad row raises :class:`UserError`."""
    stem = Path(path).stem

    def convert(obj: Any, lineno: int) -> Dialog:
        probs = row_problems(path, lineno, obj)
        if probs:
            raise UserError(probs)
        return messages_to_dialog(obj["messages"], f"{stem}_{lineno}")

    return _common.stream_jsonl(path, convert)


def write_trl_sft(path: str | Path, dialogs: Iterable[Dialog], *, style: Style | Literal["auto"] = "auto") -> int:
    """Atomically write dialogs as TRL ``messages`` rows; return how many."""
    from sage_dialog.core import io

    return io.write_jsonl(path, ({"messages": dialog_to_messages(d, style)} for d in dialogs))

"""ShareGPT-style dialog files of the original SAGE scripts (FORMATS.md section 2).

A file is one JSON array ``[{"id": "identity_7", "conversations": [{"from": "human"|"gpt",
"value": str}, ...]}, ...]``, in three styles that differ only in the tags in front of ``value``:

* **raw**: no tags;
* **annotated**: every turn prefixed by ``{motivation: .., emotion: .., topic: [..]} `` (the user's
  tags are its ``state``, the assistant's its ``action``);
* **chained** (SAC): human turns plain, gpt turns ``{u_..} {a_..} reply``.

Reading detects the style per turn (tags are parsed with :func:`sac.parse`, both key spellings);
writing renders canonical short keys (``style="auto"`` picks the style from the dialogs). Files are
whole JSON documents (the original format), written with 4-space indentation, non-ASCII kept, and a
final newline. Record numbers in error lines are 1-based positions in the array.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

from sage_dialog.core import io, sac
from sage_dialog.core.errors import UserError, where
from sage_dialog.core.schema import Dialog, Turn
from sage_dialog.formats._common import (
    Style,
    content_to_turn,
    dialog_style,
    role_order_problem,
    tags_problem,
    turn_content,
    type_name,
)

FROM_TO_ROLE: dict[str, Literal["system", "user", "assistant"]] = {"human": "user", "gpt": "assistant", "system": "system"}
ROLE_TO_FROM = {v: k for k, v in FROM_TO_ROLE.items()}
_ID_NUM = re.compile(r"_(\d+)$")
_NAMES = {"user": "human", "assistant": "gpt", "system": "system"}


def id_number(dialog_id: str) -> int | None:
    """The trailing ``_<int>`` of an id (``identity_7`` -> 7), or None."""
    m = _ID_NUM.search(dialog_id)
    return int(m.group(1)) if m else None


def sort_by_id(dialogs: Iterable[Dialog]) -> list[Dialog]:
    """Sort as the original does, by the id's trailing integer; ids without one keep their order, last."""
    items = list(dialogs)
    keyed = [((0, n, i) if (n := id_number(d.id)) is not None else (1, 0, i), d) for i, d in enumerate(items)]
    return [d for _, d in sorted(keyed, key=lambda kd: kd[0])]


# ---------------------------------------------------------------------------------------------
# checking


def record_problems(path: object, index: int, obj: Any, *, style: Style | None = None) -> list[str]:
    """Every problem of one array element (``index`` is 1-based); empty when it is a good dialog.

    Checks: an object with a string ``id`` and a non-empty ``conversations`` array; each turn an
    object with exactly ``from`` (human/gpt, or system first) and string ``value``; roles alternate
    starting with human; a ``{`` at the start of a value opens a tag block that parses. With
    ``style`` given also: annotated files tag every turn, chained files tag every gpt turn with a
    state and an action block and no human turn.
    """
    if not isinstance(obj, dict):
        return [f"{where(path, index)}: expected a dialog object, got {type_name(obj)}"]
    out: list[str] = []
    rid = obj.get("id")
    rec = f"{index} ({rid})" if isinstance(rid, str) else index
    if "id" not in obj:
        out.append(f"{where(path, rec, 'id')}: missing")
    elif not isinstance(rid, str):
        out.append(f"{where(path, rec, 'id')}: expected a string, got {type_name(rid)}")
    if "conversations" not in obj:
        out.append(f"{where(path, rec, 'conversations')}: missing")
        return out
    conv = obj["conversations"]
    if not isinstance(conv, list):
        out.append(f"{where(path, rec, 'conversations')}: expected an array of turns, got {type_name(conv)}")
        return out
    if not conv:
        out.append(f"{where(path, rec, 'conversations')}: empty dialog")
        return out
    roles: list[str] = []
    for j, turn in enumerate(conv):
        f = f"conversations[{j}]"
        if not isinstance(turn, dict):
            out.append(f"{where(path, rec, f)}: expected a turn object, got {type_name(turn)}")
            roles.append("?")
            continue
        for k in turn:
            if k not in ("from", "value"):
                out.append(f"{where(path, rec, f)}: unexpected key {k!r} (a turn has only from and value)")
        frm, value = turn.get("from"), turn.get("value")
        if "from" not in turn:
            out.append(f"{where(path, rec, f + '.from')}: missing")
        elif frm not in FROM_TO_ROLE:
            out.append(f"{where(path, rec, f + '.from')}: unknown speaker {frm!r} (expected human or gpt)")
        if "value" not in turn:
            out.append(f"{where(path, rec, f + '.value')}: missing")
        elif not isinstance(value, str):
            out.append(f"{where(path, rec, f + '.value')}: expected a string, got {type_name(value)}")
        else:
            if (tp := tags_problem(value)) is not None:
                out.append(f"{where(path, rec, f + '.value')}: {tp}")
            elif style is not None and frm in ("human", "gpt"):
                out.extend(_style_problems(path, rec, f + ".value", frm, value, style))
        roles.append(FROM_TO_ROLE.get(frm, "?") if isinstance(frm, str) else "?")
    if "?" not in roles:
        bad = role_order_problem(roles, _NAMES)
        if bad:
            out.append(f"{where(path, rec, f'conversations[{bad[0]}].from')}: {bad[1]}")
    return out


def _style_problems(path: object, rec: object, field: str, frm: str, value: str, style: Style) -> list[str]:
    p = sac.parse(value)
    kinds = [k for k, _ in p.blocks]
    if style == "annotated" and kinds != ["plain"]:
        want = "one {motivation, emotion, topic} tag block"
        return [f"{where(path, rec, field)}: expected {want} in an annotated file, found {len(kinds) or 'none'}"
                + (f" ({', '.join(kinds)})" if kinds else "")]
    if style == "chained":
        if frm == "human" and kinds:
            return [f"{where(path, rec, field)}: human turns of a chained file carry no tags"]
        if frm == "gpt" and kinds != ["state", "action"]:
            return [f"{where(path, rec, field)}: expected a {{u_..}} then a {{a_..}} tag block in a chained file"]
    return []


def detect_file_style(records: list[Any]) -> Style:
    """Style of a parsed array: chained if a gpt turn has a ``u_``/``a_`` block, annotated if any turn is tagged."""
    tagged = False
    for r in records:
        for t in r.get("conversations", []) if isinstance(r, dict) and isinstance(r.get("conversations"), list) else []:
            v = t.get("value") if isinstance(t, dict) else None
            if not isinstance(v, str):
                continue
            kinds = {k for k, _ in sac.parse(v).blocks}
            if t.get("from") == "gpt" and kinds & {"state", "action"}:
                return "chained"
            tagged = tagged or bool(kinds)
    return "annotated" if tagged else "raw"


def load_array(path: str | Path) -> list[Any]:
    """The JSON array of a ShareGPT-style file (errors for non-UTF-8, empty, malformed, not an array)."""
    data = io.read_json(path)
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a JSON array of dialogs, got {type_name(data)}")
    if not data:
        raise UserError(f"{path}: empty array, expected dialogs")
    return data


def check_sharegpt(path: str | Path, *, style: Style | None = None) -> tuple[list[str], int]:
    """All problems of a file and its number of records. ``style`` None: detected from the file."""
    data = load_array(path)
    st: Style | None = style or detect_file_style(data)
    st = None if st == "raw" else st
    problems: list[str] = []
    first: dict[str, int] = {}
    for i, obj in enumerate(data, start=1):
        problems.extend(record_problems(path, i, obj, style=st))
        rid = obj.get("id") if isinstance(obj, dict) else None
        if isinstance(rid, str):
            if rid in first:
                problems.append(f"{where(path, i, 'id')}: duplicate id {rid!r} (first in record {first[rid]})")
            else:
                first[rid] = i
    return problems, len(data)


# ---------------------------------------------------------------------------------------------
# reading and writing


def record_to_dialog(obj: dict[str, Any]) -> Dialog:
    """One well-formed record as a :class:`Dialog` (keys other than id/conversations go to ``meta``)."""
    turns: list[Turn] = [content_to_turn(FROM_TO_ROLE[t["from"]], t["value"]) for t in obj["conversations"]]
    extra = {k: v for k, v in obj.items() if k not in ("id", "conversations")}
    return Dialog(id=obj["id"], turns=turns, meta={"sharegpt_extra": extra} if extra else {})


def dialog_to_record(d: Dialog, style: Style | Literal["auto"] = "auto") -> dict[str, Any]:
    """A :class:`Dialog` as one ShareGPT record in ``style`` (``auto``: :func:`dialog_style`)."""
    st: Style = dialog_style(d) if style == "auto" else style
    rec: dict[str, Any] = {
        "id": d.id,
        "conversations": [{"from": ROLE_TO_FROM[t.role], "value": turn_content(t, st)} for t in d.turns],
    }
    rec.update(d.meta.get("sharegpt_extra", {}))
    return rec


def files_style(dialogs: Iterable[Dialog]) -> Style:
    """One style for a whole file: chained if any dialog is chained, else annotated if any is tagged."""
    styles = {dialog_style(d) for d in dialogs}
    return "chained" if "chained" in styles else "annotated" if "annotated" in styles else "raw"


def read_sharegpt(
    path: str | Path,
    *,
    sort: bool = False,
    skip_invalid: bool = False,
    warn: Callable[[str], None] | None = None,
) -> list[Dialog]:
    """Read a raw, annotated or chained ShareGPT file into dialogs (file order unless ``sort``).

    Bad records raise one :class:`UserError` listing every problem, unless ``skip_invalid``: then
    each bad record is dropped and its problems are passed to ``warn`` (the mixing behaviour of the
    original, which drops dialogs that do not alternate, have extra keys, or are empty).
    """
    data = load_array(path)
    problems: list[str] = []
    out: list[Dialog] = []
    for i, obj in enumerate(data, start=1):
        probs = record_problems(path, i, obj)
        if probs:
            if skip_invalid:
                for line in probs:
                    (warn or (lambda s: None))(f"dropped: {line}")
                continue
            problems.extend(probs)
            continue
        out.append(record_to_dialog(obj))
    if problems:
        raise UserError(problems)
    return sort_by_id(out) if sort else out


def dumps_sharegpt(records: list[dict[str, Any]]) -> str:
    """The exact text written for a list of records (4-space indent, UTF-8 kept, final newline)."""
    import json

    return json.dumps(records, ensure_ascii=False, indent=4) + "\n"


def write_sharegpt(path: str | Path, dialogs: Iterable[Dialog], *, style: Style | Literal["auto"] = "auto") -> int:
    """Atomically write dialogs as a ShareGPT JSON array in ``style``; return how many."""
    items = list(dialogs)
    st = files_style(items) if style == "auto" else style
    records = [dialog_to_record(d, st) for d in items]
    with io.atomic_write(path) as fh:
        fh.write(dumps_sharegpt(records))
    return len(records)

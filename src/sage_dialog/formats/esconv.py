"""ESConv (Liu et al., 2021): emotional-support conversations with supporter strategies.

The file is one JSON array of dialogs, each with ``emotion_type``, ``problem_type``, ``situation``
and ``dialog``: turns of ``speaker`` (``seeker`` / ``supporter``) and ``content``; supporter turns
carry ``annotation.strategy``, one of 8 strategies (the shipped label set ``esconv_strategies``).

Each dialog becomes a :class:`Dialog` with the seeker as the user and the supporter as the assistant.
Consecutive turns of one speaker are merged so roles alternate; a supporter turn's strategy becomes
its ``action.motivation`` (the first strategy of a merged turn; all of them are kept in
``meta["strategies"]``, one list per turn). Supporter turns before the seeker's first turn cannot
start a user-first dialog: they are kept in ``meta["leading_supporter"]``, never dropped silently.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sage_dialog.core.errors import UserError, where
from sage_dialog.core.io import read_json
from sage_dialog.core.schema import Dialog, Role, Tags, Turn
from sage_dialog.labels import load_label_set

SOURCE = "esconv"
_ROLES: dict[str, Role] = {"seeker": "user", "usr": "user", "supporter": "assistant", "sys": "assistant"}


def canonical_strategies() -> dict[str, str]:
    """Case-insensitive spelling -> the label as written in ``esconv_strategies.txt``."""
    return {s.casefold(): s for s in load_label_set("esconv_strategies")}


def _dialog(path: Path, i: int, rec: Any, canon: dict[str, str]) -> Dialog:
    if not isinstance(rec, dict):
        raise UserError(f"{where(path, i)}: expected an object, got {type(rec).__name__}")
    turns_in = rec.get("dialog")
    if not isinstance(turns_in, list) or not turns_in:
        raise UserError(f"{where(path, i, 'dialog')}: expected a non-empty list of turns")
    turns: list[Turn] = []
    strategies: list[list[str]] = []
    leading: list[str] = []
    for j, t in enumerate(turns_in):
        if not isinstance(t, dict):
            raise UserError(f"{where(path, i, f'dialog[{j}]')}: expected an object")
        role = _ROLES.get(str(t.get("speaker", "")).strip().lower())
        if role is None:
            raise UserError(f"{where(path, i, f'dialog[{j}].speaker')}: expected seeker or supporter, got {t.get('speaker')!r}")
        content = t.get("content")
        if not isinstance(content, str):
            raise UserError(f"{where(path, i, f'dialog[{j}].content')}: expected a string")
        text = " ".join(content.split())
        if not text:
            continue  # the corpus has a few empty utterances; they carry nothing to merge
        strategy: str | None = None
        if role == "assistant":
            ann = t.get("annotation") or {}
            raw = ann.get("strategy") if isinstance(ann, dict) else None
            if raw is not None:
                strategy = canon.get(str(raw).strip().casefold())
                if strategy is None:
                    raise UserError(
                        f"{where(path, i, f'dialog[{j}].annotation.strategy')}: unknown strategy {raw!r} "
                        f"(known: {', '.join(canon.values())})"
                    )
        if not turns and role == "assistant":
            leading.append(text)
            continue
        if turns and turns[-1].role == role:
            turns[-1].text = f"{turns[-1].text} {text}"
            if strategy and strategy not in strategies[-1]:
                strategies[-1].append(strategy)
        else:
            turns.append(Turn(role=role, text=text))
            strategies.append([strategy] if strategy else [])
    if not turns:
        raise UserError(f"{where(path, i, 'dialog')}: no seeker turn")
    for turn, strats in zip(turns, strategies, strict=True):
        if turn.role == "assistant" and strats:
            turn.action = Tags(motivation=strats[0])
    meta: dict[str, Any] = {"source": SOURCE, "file": path.name, "strategies": strategies}
    for key in ("emotion_type", "problem_type", "situation", "experience_type"):
        if key in rec:
            meta[key] = rec[key]
    if leading:
        meta["leading_supporter"] = leading
    return Dialog(id=str(rec.get("id", f"esconv_{i}")), turns=turns, meta=meta)


def read_esconv(path: str | Path) -> Iterator[Dialog]:
    """The dialogs of an ESConv JSON file, in file order (ids ``esconv_<index>`` from 1)."""
    p = Path(path)
    data = read_json(p)
    if not isinstance(data, list):
        raise UserError(f"{p}: expected a JSON array of ESConv dialogs, got {type(data).__name__}")
    if not data:
        raise UserError(f"{p}: empty array, expected ESConv dialogs")
    canon = canonical_strategies()
    for i, rec in enumerate(data, 1):
        yield _dialog(p, i, rec, canon)


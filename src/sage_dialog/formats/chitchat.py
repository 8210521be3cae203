"""The Chit-Chat Challenge corpus (PyPI ``chitchat-dataset``, MIT): 7,168 human open-domain chats.

The file (``chitchat_dataset/dataset.json``) is one JSON object ``id -> {"messages": [[{"text",
"sender", "timestamp"}, ...], ...], "start", "prompt"?, "ratings"?}``; each inner list is one
speaker's run of consecutive messages.

Each conversation becomes a :class:`Dialog`: the first speaker is the user, the other the
assistant, and a run's messages are joined with spaces into one turn. A run that mixes senders,
two runs in a row from the same sender, a third sender, or two runs from one speaker only are
errors naming the record and field. A conversation of a single run (only the first speaker wrote;
3,150 of the corpus's conversations) is a one-turn dialog, which ``import --min-turns`` (default 2)
skips and counts.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sage_dialog.core.errors import UserError, where
from sage_dialog.core.io import read_json
from sage_dialog.core.schema import Dialog, Role, Turn

SOURCE = "chitchat"
INSTALL = "pip install chitchat-dataset"


def default_path() -> Path:
    """``dataset.json`` of the installed ``chitchat-dataset`` package (found without importing it)."""
    spec = importlib.util.find_spec("chitchat_dataset")
    for loc in list(spec.submodule_search_locations or []) if spec is not None else []:
        p = Path(loc) / "dataset.json"
        if p.is_file():
            return p
    raise UserError(f"import chitchat: no FILE given and the chitchat-dataset package is not installed ({INSTALL})")


def _dialog(path: Path, key: str, rec: Any) -> Dialog:
    if not isinstance(rec, dict):
        raise UserError(f"{where(path, key)}: expected an object with 'messages', got {type(rec).__name__}")
    runs = rec.get("messages")
    if not isinstance(runs, list) or not runs:
        raise UserError(f"{where(path, key, 'messages')}: expected a non-empty list of message runs")
    senders: list[str] = []
    prev: str | None = None
    turns: list[Turn] = []
    for j, run in enumerate(runs):
        if not isinstance(run, list) or not run:
            raise UserError(f"{where(path, key, f'messages[{j}]')}: expected a non-empty list of messages")
        sender: str | None = None
        texts: list[str] = []
        for k, m in enumerate(run):
            field = f"messages[{j}][{k}]"
            if not isinstance(m, dict):
                raise UserError(f"{where(path, key, field)}: expected an object with text and sender")
            text, who = m.get("text"), m.get("sender")
            if not isinstance(text, str):
                raise UserError(f"{where(path, key, field + '.text')}: expected a string")
            if not isinstance(who, str) or not who:
                raise UserError(f"{where(path, key, field + '.sender')}: expected a sender id")
            if sender is None:
                sender = who
            elif who != sender:
                raise UserError(f"{where(path, key, field + '.sender')}: a run mixes two senders")
            if text.strip():
                texts.append(" ".join(text.split()))
        assert sender is not None
        if prev == sender:
            raise UserError(
                f"{where(path, key, f'messages[{j}]')}: two runs in a row from one sender "
                f"(runs must alternate{'; the conversation has one speaker only' if len(set(senders)) == 1 else ''})"
            )
        prev = sender
        if sender not in senders:
            senders.append(sender)
        if len(senders) > 2:
            raise UserError(f"{where(path, key, f'messages[{j}][0].sender')}: a third speaker in a two-party chat")
        role: Role = "user" if sender == senders[0] else "assistant"
        if texts:
            if turns and turns[-1].role == role:  # the other speaker's run between was all empty
                turns[-1].text = f"{turns[-1].text} {' '.join(texts)}"
            else:
                turns.append(Turn(role=role, text=" ".join(texts)))
    if not turns:
        raise UserError(f"{where(path, key, 'messages')}: every message is empty")
    meta: dict[str, Any] = {"source": SOURCE, "file": path.name}
    for name in ("prompt", "start", "ratings"):
        if name in rec:
            meta[name] = rec[name]
    return Dialog(id=str(key), turns=turns, meta=meta)


def read_chitchat(path: str | Path) -> Iterator[Dialog]:
    """The conversations of a chitchat ``dataset.json``, in file order."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such file")
    data = read_json(p)
    if not isinstance(data, dict):
        raise UserError(f"{p}: expected a JSON object of chitchat conversations (id -> {{messages}}), "
                        f"got {type(data).__name__}")
    if not data:
        raise UserError(f"{p}: empty object, expected chitchat conversations")
    for key, rec in data.items():
        yield _dialog(p, key, rec)

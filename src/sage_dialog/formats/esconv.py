"""ESConv (Liu et al., 2021): emotional-support conversations with supporter strategies.

The file is one JSON array of dialogs, each with ``emotion_type``, ``problem_type``, ``situation``
and ``dialog``: turns of ``speaker`` (``seeker`` / ``supporter``) and ``content``; supporter turns
carry ``annotation.strategy``, one of 8 strategies (the shipped label set ``esconv_strategies``).

Each dialog becomes a :class:`Dialog` with the seeker as the user and the supporter as the assistant
(the published ``FailedESConv.json`` says ``speaker`` / ``listener``, and spells some strategies its
own way: both are read, see :data:`STRATEGY_ALIASES`).
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
_ROLES: dict[str, Role] = {"seeker": "user", "usr": "user", "speaker": "user",
                           "supporter": "assistant", "sys": "assistant", "listener": "assistant"}
# spellings seen in published ESConv files (FailedESConv.json among them) -> the shipped label
STRATEGY_ALIASES: dict[str, str] = {
    "questions": "Question",
    "other": "Others",
    "restatement": "Restatement or Paraphrasing",
    "paraphrasing": "Restatement or Paraphrasing",
    "reflection of feeling": "Reflection of feelings",
    "self disclosure": "Self-disclosure",
    "approval and reassurance": "Affirmation and Reassurance",
    "direct guidance": "Providing Suggestions",
    "providing suggestion": "Providing Suggestions",
}


def canonical_strategies(label_map: dict[str, str] | None = None) -> dict[str, str]:
    """Case-insensitive spelling -> label: the shipped set, the known aliases, then ``label_map``.

    A ``label_map`` target that is a shipped label (in any case) is written as the shipped label;
    any other target is kept as given.
    """
    canon = {s.casefold(): s for s in load_label_set("esconv_strategies")}
    out = dict(canon)
    out.update({k: v for k, v in STRATEGY_ALIASES.items()})
    for k, v in (label_map or {}).items():
        out[str(k).strip().casefold()] = canon.get(str(v).strip().casefold(), str(v).strip())
    return out


def read_label_map(path: str | Path) -> dict[str, str]:
    """A label map file: a JSON or YAML mapping ``{"spelling in the file": "label"}``."""
    from sage_dialog.core.config import read_yaml

    data = read_yaml(path)
    bad = [k for k, v in data.items() if not isinstance(v, str) or not str(v).strip()]
    if bad:
        raise UserError(f"{where(path, None, str(bad[0]))}: expected a label (a string)")
    return {str(k): str(v) for k, v in data.items()}


class _Unknown:
    """Unknown values of one field over a whole file: value -> (count, first place)."""

    def __init__(self, what: str):
        self.what = what
        self.seen: dict[str, list[Any]] = {}

    def add(self, value: str, place: str) -> None:
        entry = self.seen.setdefault(value, [0, place])
        entry[0] += 1

    def message(self, path: Path, hint: str) -> str:
        items = sorted(self.seen.items(), key=lambda kv: (-kv[1][0], kv[0]))
        listed = "; ".join(f"{v!r} x{n} (first at {place})" for v, (n, place) in items)
        return f"{path}: {len(items)} unknown {self.what} value(s) {hint}: {listed}"


def _dialog(path: Path, i: int, rec: Any, canon: dict[str, str], keep_unknown: bool,
            unknown_speakers: _Unknown, unknown_strategies: _Unknown) -> Dialog | None:
    if not isinstance(rec, dict):
        raise UserError(f"{where(path, i)}: expected an object, got {type(rec).__name__}")
    turns_in = rec.get("dialog")
    if not isinstance(turns_in, list) or not turns_in:
        raise UserError(f"{where(path, i, 'dialog')}: expected a non-empty list of turns")
    turns: list[Turn] = []
    strategies: list[list[str]] = []
    leading: list[str] = []
    broken = False
    for j, t in enumerate(turns_in):
        if not isinstance(t, dict):
            raise UserError(f"{where(path, i, f'dialog[{j}]')}: expected an object")
        speaker = str(t.get("speaker", "")).strip()
        role = _ROLES.get(speaker.lower())
        if role is None:
            unknown_speakers.add(speaker, f"record {i}, field dialog[{j}].speaker")
            broken = True
            continue
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
            if raw is not None and str(raw).strip():
                strategy = canon.get(str(raw).strip().casefold())
                if strategy is None:
                    if keep_unknown:
                        strategy = str(raw).strip()
                    else:
                        unknown_strategies.add(str(raw).strip(),
                                               f"record {i}, field dialog[{j}].annotation.strategy")
                        broken = True
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
    if broken:
        return None  # reported once for the whole file
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


def read_esconv(path: str | Path, *, label_map: dict[str, str] | None = None,
                keep_unknown: bool = False) -> Iterator[Dialog]:
    """The dialogs of an ESConv JSON file, in file order (ids ``esconv_<index>`` from 1).

    Speakers ``seeker``/``usr``/``speaker`` are the user, ``supporter``/``sys``/``listener`` the
    assistant. Strategies are matched case-insensitively against the shipped set, the known aliases
    (:data:`STRATEGY_ALIASES`) and ``label_map``; others are kept as written with ``keep_unknown``,
    else the whole file is refused with one message listing every unknown value and its count.
    """
    p = Path(path)
    data = read_json(p)
    if not isinstance(data, list):
        raise UserError(f"{p}: expected a JSON array of ESConv dialogs, got {type(data).__name__}")
    if not data:
        raise UserError(f"{p}: empty array, expected ESConv dialogs")
    canon = canonical_strategies(label_map)
    speakers, strategies = _Unknown("speaker"), _Unknown("strategy")
    # the whole file is checked before the first dialog is handed out: nothing partial is written
    out = [_dialog(p, i, rec, canon, keep_unknown, speakers, strategies) for i, rec in enumerate(data, 1)]
    problems = []
    if speakers.seen:
        problems.append(speakers.message(p, f"(speakers are {', '.join(sorted(_ROLES))})"))
    if strategies.seen:
        problems.append(strategies.message(p, "(map them with --label-map FILE or keep them with --keep-unknown)"))
    if problems:
        raise UserError(problems)
    yield from (d for d in out if d is not None)

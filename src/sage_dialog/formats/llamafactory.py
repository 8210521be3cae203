"""LLaMA-Factory dataset folders (FORMATS.md sections 4 and 5).

An SFT export is a folder with ``mix.json`` (the chained ShareGPT file) and a ``dataset_info.json``
entry ``{"file_name": "mix.json", "formatting": "sharegpt", "columns": {"messages":
"conversations"}}``, so LLaMA-Factory trains from it with ``dataset_dir: <folder>`` and
``dataset: data_mix`` and no hand edits. Preference exports (see :mod:`.preferences`) add an entry
with ``"ranking": true`` and the ``chosen``/``rejected`` columns.

Writing merges into an existing ``dataset_info.json`` (other datasets are kept), each file
atomically.

An SFT export holds only what LLaMA-Factory trains on. Its sharegpt converter
(``llamafactory/data/converter.py``, 0.9.x) takes an optional first ``system`` turn, then needs
human/gpt turns alternating from a human start and an *even* count (else "Invalid message count":
the example is skipped), and its supervised processor drops a prompt that is not odd-length with
one response. So :func:`lf_trainable` trims a dialog's trailing human turns (and leading gpt
turns), and a dialog with no human -> gpt exchange left, or with turns out of order, is left out;
:class:`SftExport` counts both, and the ``mix`` stage reports them in its summary.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sage_dialog.core import io
from sage_dialog.core.errors import UserError, where
from sage_dialog.core.schema import Dialog
from sage_dialog.formats import sharegpt
from sage_dialog.formats._common import Style, type_name

SFT_NAME = "data_mix"
SFT_FILE = "mix.json"
INFO_FILE = "dataset_info.json"


def sft_dataset_info(file_name: str = SFT_FILE) -> dict[str, Any]:
    """The ``dataset_info.json`` entry of an SFT (sharegpt) dataset."""
    return {"file_name": file_name, "formatting": "sharegpt", "columns": {"messages": "conversations"}}


def ranking_dataset_info(file_name: str) -> dict[str, Any]:
    """The ``dataset_info.json`` entry of a preference (sharegpt ranking) dataset."""
    return {
        "file_name": file_name,
        "formatting": "sharegpt",
        "ranking": True,
        "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"},
    }


def read_dataset_info(folder: str | Path) -> dict[str, Any]:
    """``dataset_info.json`` of a folder (a mapping of dataset name -> entry)."""
    path = Path(folder) / INFO_FILE
    data = io.read_json(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object of datasets, got {type_name(data)}")
    for name, entry in data.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("file_name"), str):
            raise UserError(f"{where(path, name, 'file_name')}: missing or not a string")
    return data


def update_dataset_info(folder: str | Path, name: str, entry: dict[str, Any]) -> Path:
    """Add or replace one entry of ``<folder>/dataset_info.json`` (atomic; other entries kept)."""
    path = Path(folder) / INFO_FILE
    info = read_dataset_info(folder) if path.exists() else {}
    info[name] = entry
    io.write_json(path, info)
    return path


def find_entry(folder: str | Path, *, ranking: bool, name: str | None = None) -> tuple[str, dict[str, Any]]:
    """The named entry, or the only sharegpt entry of the wanted kind (SFT or ranking)."""
    info = read_dataset_info(folder)
    path = Path(folder) / INFO_FILE
    if name is not None:
        if name not in info:
            raise UserError(f"{path}: no dataset named {name!r} (have: {', '.join(info) or 'none'})")
        return name, info[name]
    hits = [(n, e) for n, e in info.items() if e.get("formatting") == "sharegpt" and bool(e.get("ranking")) == ranking]
    if len(hits) != 1:
        kind = "ranking" if ranking else "SFT"
        raise UserError(f"{path}: expected exactly one sharegpt {kind} dataset, found {len(hits)}; name one")
    return hits[0]


@dataclass
class SftExport:
    """What an SFT export wrote: the folder, the dialogs written, and what was cut to fit LLaMA-Factory."""

    folder: Path
    written: int = 0
    trimmed: int = 0  # dialogs that lost trailing human (or leading gpt) turns
    turns_trimmed: int = 0
    left_out: list[str] = field(default_factory=list)  # ids: nothing trainable left, or turns out of order

    def summary(self) -> dict[str, Any]:
        """The counts for a manifest (ids of left-out dialogs capped at 50)."""
        return {"written": self.written, "trimmed_dialogs": self.trimmed, "turns_trimmed": self.turns_trimmed,
                "left_out": len(self.left_out), "left_out_ids": self.left_out[:50]}


def lf_trainable(d: Dialog) -> tuple[Dialog | None, int]:
    """``(the dialog as LLaMA-Factory's sharegpt SFT loader accepts it, turns cut)``; None when nothing is.

    Kept: an optional first system turn, then user/assistant turns alternating from a user turn and
    ending on an assistant turn. Trailing user turns and leading assistant turns are cut; a dialog
    whose turns do not alternate (or with a system turn past the first) is None.
    """
    turns = list(d.turns)
    head = turns[:1] if turns and turns[0].role == "system" else []
    body = turns[len(head):]
    start, end = 0, len(body)
    while start < end and body[start].role == "assistant":
        start += 1
    while end > start and body[end - 1].role == "user":
        end -= 1
    kept = body[start:end]
    if not kept or any(t.role != ("user", "assistant")[i % 2] for i, t in enumerate(kept)):
        return None, len(body) - len(kept)
    cut = len(body) - len(kept)
    return (d if cut == 0 else d.model_copy(update={"turns": head + kept})), cut


def write_sft_export(folder: str | Path, dialogs: Iterable[Dialog], *, name: str = SFT_NAME,
                     file_name: str = SFT_FILE, style: Style | Literal["auto"] = "chained") -> SftExport:
    """Write ``<folder>/mix.json`` and its ``dataset_info.json`` entry, every dialog trimmed to what
    LLaMA-Factory trains on (:func:`lf_trainable`); return what was written and cut."""
    out = Path(folder)
    report = SftExport(out)
    kept: list[Dialog] = []
    for d in dialogs:
        fit, cut = lf_trainable(d)
        if fit is None:
            report.left_out.append(d.id)
            continue
        report.trimmed += cut > 0
        report.turns_trimmed += cut
        kept.append(fit)
    report.written = sharegpt.write_sharegpt(out / file_name, kept, style=style)
    update_dataset_info(out, name, sft_dataset_info(file_name))
    return report


def read_sft_export(folder: str | Path, *, name: str | None = None) -> list[Dialog]:
    """Dialogs of an SFT export folder (the only sharegpt non-ranking entry, or ``name``)."""
    _, entry = find_entry(folder, ranking=False, name=name)
    cols = entry.get("columns", {})
    if cols.get("messages", "conversations") != "conversations":
        raise UserError(f"{Path(folder) / INFO_FILE}: columns.messages must be 'conversations' to be read here")
    return sharegpt.read_sharegpt(Path(folder) / entry["file_name"])


def check_sft_export(folder: str | Path, *, name: str | None = None) -> tuple[list[str], int]:
    """All problems of an SFT export folder's data file."""
    _, entry = find_entry(folder, ranking=False, name=name)
    return sharegpt.check_sharegpt(Path(folder) / entry["file_name"])

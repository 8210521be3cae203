"""LLaMA-Factory dataset folders (FORMATS.md sections 4 and 5).

An SFT export is a folder with ``mix.json`` (the chained ShareGPT file) and a ``dataset_info.json``
entry ``{"file_name": "mix.json", "formatting": "sharegpt", "columns": {"messages":
"conversations"}}``, so LLaMA-Factory trains from it with ``dataset_dir: <folder>`` and
``dataset: data_mix`` and no hand edits. Preference exports (see :mod:`.preferences`) add an entry
with ``"ranking": true`` and the ``chosen``/``rejected`` columns.

Writing merges into an existing ``dataset_info.json`` (other datasets are kept), each file
atomically.
"""

from __future__ import annotations

from collections.abc import Iterable
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


def write_sft_export(folder: str | Path, dialogs: Iterable[Dialog], *, name: str = SFT_NAME,
                     file_name: str = SFT_FILE, style: Style | Literal["auto"] = "chained") -> Path:
    """Write ``<folder>/mix.json`` and its ``dataset_info.json`` entry; return the folder."""
    out = Path(folder)
    sharegpt.write_sharegpt(out / file_name, dialogs, style=style)
    update_dataset_info(out, name, sft_dataset_info(file_name))
    return out


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

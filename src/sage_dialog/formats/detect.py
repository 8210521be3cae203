"""Which format a file or folder is in, from its name and first bytes."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any

from sage_dialog.core.errors import UserError
from sage_dialog.core.io import loads_json
from sage_dialog.formats.registry import Kind


def _peek_text(path: Path, n: int = 65536) -> str:
    with path.open("rb") as fh:
        return fh.read(n).decode("utf-8", errors="replace").removeprefix("\ufeff")


def _first_json_line(path: Path) -> Any:
    from sage_dialog.core.limits import bounded_lines

    with path.open("rb") as fh:
        for _, raw in bounded_lines(fh, path):
            if raw.strip():
                try:
                    return loads_json(raw.decode("utf-8"), str(path))
                except (UnicodeDecodeError, UserError):
                    return None
    return None


_KEY = re.compile(r'"([A-Za-z_]+)"\s*:')


def detect_format(path: str | Path) -> str:
    """Guess a file's or folder's format from its name and first bytes (a :class:`UserError` if unsure)."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: no such file")
    if p.is_dir():
        return _detect_dir(p)
    suffix = p.suffix.lower()
    if p.name == "data_spec.json":
        return "data-spec"
    if suffix == ".jsonl":
        obj = _first_json_line(p)
        if isinstance(obj, dict):
            if obj.get("kind") == "dialog":
                return "dialogs"
            if obj.get("kind") == "pair":
                return "pairs"
            if obj.get("kind") == "node":
                return "search-trees"
            if "messages" in obj:
                return "trl-sft"
            if "prompt" in obj and "chosen" in obj:
                return "prefs-trl"
        return "dialogs"
    if suffix == ".csv":
        return "empathetic"
    if suffix == ".tsv":
        head = _peek_text(p, 256)
        if head.startswith("Label"):
            return "combined-tsv"
        if head.startswith("Prediction"):
            return "consensus-tsv"
    if suffix == ".txt":
        raise UserError(f"{p}: a single transcript; pass its folder (formats transcripts, transcripts-full, "
                        "transcripts-converted)")
    if suffix == ".json":
        keys = set(_KEY.findall(_peek_text(p)))
        if "conversations" in keys and "chosen" in keys:
            return "prefs-llamafactory"
        if "conversations" in keys:
            return "sharegpt"
        if "instruction" in keys and "history" in keys:
            return "prefs-original"
        if "instruction" in keys:
            text = _peek_text(p)
            return "prefs-original" if re.search(r'"output"\s*:\s*\[', text) else "judge-input"
        if "label" in keys and "predict" in keys:
            return "judge-output"
        if "dialog" in keys and ("emotion_type" in keys or "speaker" in keys):
            return "esconv"
        if "prompt" in keys and "size" in keys:
            return "data-spec"
        return "sharegpt"
    raise UserError(f"{p}: cannot tell the format from the name; give it (--format, --from or --to)")


def _detect_dir(p: Path) -> str:
    from sage_dialog.formats.trees import looks_like_trees

    if looks_like_trees(p):
        return "search-trees"
    if (p / "dataset_info.json").exists():
        with contextlib.suppress(UserError):
            from sage_dialog.formats.llamafactory import read_dataset_info

            info = read_dataset_info(p)
            if info and all(bool(e.get("ranking")) for e in info.values()):
                return "prefs-llamafactory"
        return "llamafactory-sft"
    txts = sorted(p.glob("*.txt"))
    if txts:
        from sage_dialog.formats.transcripts import detect_variant

        return {"plain": "transcripts", "full": "transcripts-full", "converted": "transcripts-converted"}[
            detect_variant(txts[0])
        ]
    raise UserError(f"{p}: a folder with neither dataset_info.json nor .txt transcripts; give the format")


def output_format(path: str | Path, kind: Kind) -> str | None:
    """The format implied by an output name for records of ``kind`` (None when it is not clear)."""
    suffix = Path(path).suffix.lower()
    if kind == "dialog":
        return {".jsonl": "dialogs", ".json": "sharegpt"}.get(suffix)
    if kind == "pair":
        return {".jsonl": "pairs"}.get(suffix)
    return None


__all__ = ["detect_format", "output_format"]

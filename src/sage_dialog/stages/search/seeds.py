"""Seed utterances that open self-play dialogs, from the files people have them in.

A text file (one utterance per line, EmpatheticDialogues ``_comma_`` escapes allowed, as the
original's ``test_sent.tsv``), JSONL (strings, objects with ``text``/``seed``/``prompt``/``utterance``,
or dialogs: their first user turn) or an EmpatheticDialogues CSV (first utterance of each conversation).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sage_dialog.core.errors import UserError, where


def read_seed_file(path: Path) -> list[str]:
    """Seed utterances from a text, JSONL or EmpatheticDialogues CSV file (see the module docstring)."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        from sage_dialog.formats.empathetic import read_empathetic_csv

        seeds = [d.turns[0].text for d in read_empathetic_csv(path) if d.turns]
    elif suffix == ".jsonl":
        from sage_dialog.core.io import iter_jsonl_raw

        seeds = []
        for lineno, obj in iter_jsonl_raw(path):
            if isinstance(obj, str):
                text: Any = obj
            elif isinstance(obj, dict) and isinstance(obj.get("turns"), list):
                users = [t for t in obj["turns"] if isinstance(t, dict) and t.get("role") == "user"]
                if not users:
                    raise UserError(f"{where(path, lineno, 'turns')}: dialog has no user turn to start from")
                text = users[0].get("text")
            elif isinstance(obj, dict):
                key = next((k for k in ("text", "seed", "prompt", "utterance") if k in obj), None)
                if key is None:
                    raise UserError(f"{where(path, lineno)}: expected a string or an object with a 'text' field")
                text = obj[key]
            else:
                raise UserError(f"{where(path, lineno)}: expected a string or an object, got {type(obj).__name__}")
            if not isinstance(text, str) or not text.strip():
                raise UserError(f"{where(path, lineno, 'text')}: expected a non-empty string")
            seeds.append(text.strip())
    else:
        from sage_dialog.formats.empathetic import read_seeds

        seeds = [s.strip() for s in read_seeds(path)]
    if not seeds:
        raise UserError(f"{path}: no seeds found")
    return seeds

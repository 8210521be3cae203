"""Ready closed label sets, and the reader for label-set files.

A label-set file is plain UTF-8 text, one label per line; blank lines and lines starting with ``#``
are ignored. Shipped sets are named by their file stem:

* ``esconv_strategies`` - the 8 ESConv support strategies (map onto ``a_motivation``);
* ``empathetic_emotions`` - the 32 EmpatheticDialogues emotions.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from sage_dialog.core.errors import UserError, where


def builtin_label_sets() -> list[str]:
    """Names of the shipped label sets."""
    root = resources.files(__name__)
    return sorted(p.name[:-4] for p in root.iterdir() if p.name.endswith(".txt"))


def parse_label_lines(text: str, source: object) -> list[str]:
    """Labels from the text of a label-set file; duplicates (case-insensitive) are errors."""
    out: list[str] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        label = line.strip()
        if not label or label.startswith("#"):
            continue
        key = label.casefold()
        if key in seen:
            raise UserError(f"{where(source, lineno)}: label {label!r} repeats line {seen[key]}")
        seen[key] = lineno
        out.append(label)
    if not out:
        raise UserError(f"{source}: no labels (one label per line expected)")
    return out


def load_label_set(name_or_path: str | Path) -> list[str]:
    """A shipped set by name (``esconv_strategies``) or a label-set file by path."""
    s = str(name_or_path)
    if s in builtin_label_sets():
        return parse_label_lines(resources.files(__name__).joinpath(f"{s}.txt").read_text("utf-8"), s)
    p = Path(s)
    if not p.is_file():
        raise UserError(
            f"{p}: no such label-set file (shipped sets: {', '.join(builtin_label_sets())})"
        )
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    return parse_label_lines(text, p)

"""Reading the annotate stage's input: a seed file or any dialog format sage-dialog reads, streamed."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from sage_dialog.core.errors import UserError
from sage_dialog.core.io import iter_jsonl_raw
from sage_dialog.core.schema import Dialog

# "auto", "seeds" (one utterance per line) or the name of a dialog format in sage_dialog.formats
InputFormat = str


def _resolve_format(path: Path, fmt: str) -> str:
    """The format name to read ``path`` with: ``seeds`` or a dialog format of :mod:`sage_dialog.formats`."""
    if fmt == "dialog":
        return "dialogs"  # the short spelling
    if fmt != "auto":
        return fmt
    if path.is_file() and path.suffix.lower() in (".tsv", ".txt"):
        return "seeds"  # the original test_sent.tsv: one utterance per line
    from sage_dialog.formats import detect_format

    return detect_format(path)


def load_dialogs(path: str | Path, fmt: InputFormat = "auto") -> Iterator[Dialog]:
    """Stream dialogs from ``path``: a seed file (``seeds``) or any dialog format sage-dialog reads
    (Dialog JSONL, ShareGPT JSON, TRL messages, a LLaMA-Factory folder, transcripts,
    EmpatheticDialogues CSV, ESConv JSON); ``auto`` detects it as ``sage-dialog convert`` does."""
    from sage_dialog.formats import get_format, read_records

    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: no such file")
    name = _resolve_format(p, fmt)
    if name == "seeds":
        from sage_dialog.formats.empathetic import seed_dialogs

        yield from seed_dialogs(p)
        return
    if get_format(name).kind != "dialog":
        raise UserError(f"{p}: format {name} holds no dialogs")
    yield from read_records(p, name)


def count_dialogs(path: Path, fmt: InputFormat) -> int:
    """Number of dialogs, for the progress bar's ETA (JSONL lines are counted without parsing records)."""
    if _resolve_format(path, fmt) == "dialogs":
        return sum(1 for _ in iter_jsonl_raw(path))
    return sum(1 for _ in load_dialogs(path, fmt))  # whole-document formats: a second, cheap read


def chunks(it: Iterable[Dialog], size: int) -> Iterator[list[Dialog]]:
    """``it`` in lists of ``size`` (the last one shorter)."""
    buf: list[Dialog] = []
    for d in it:
        buf.append(d)
        if len(buf) >= size:
            yield buf
            buf = []
    if buf:
        yield buf

"""Reading, checking and converting files through the registry (``sage-dialog convert`` and
``validate``): any readable format to any writable one of the same kind."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from sage_dialog.core.errors import UserError
from sage_dialog.core.io import check_paths
from sage_dialog.core.outputs import commit_folder
from sage_dialog.formats.detect import detect_format, output_format
from sage_dialog.formats.registry import FORMATS, get_format


def read_records(path: str | Path, fmt: str | None = None) -> Iterable[Any]:
    """The records of a file in format ``fmt`` (detected when None)."""
    f = get_format(fmt or detect_format(path))
    if f.read is None:
        raise UserError(f"{path}: format {f.name} can be checked but not converted")
    return f.read(Path(path))


def check_file(path: str | Path, fmt: str | None = None) -> tuple[str, list[str], int]:
    """``(format name, every problem, number of records)`` of a file."""
    p = Path(path)
    name = fmt or detect_format(p)
    f = get_format(name)
    if f.folder is True and not p.is_dir():
        return name, [f"{p}: expected a folder for format {name}"], 0
    if f.folder is False and p.is_dir():
        return name, [f"{p}: is a directory, expected a file"], 0
    assert f.check is not None
    try:
        problems, n = f.check(p)
    except UserError as e:
        return name, e.problems, 0
    return name, problems, n


@contextlib.contextmanager
def _staged_folder(dst: Path, writer: str) -> Iterator[Path]:
    """Write a folder output next to ``dst`` and move it into place only on success.

    An existing ``dst`` (sage-dialog's earlier output, or any folder with ``--force``, e.g.
    LLaMA-Factory/data) keeps everything but the files written now (:func:`commit_folder`).
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
    try:
        info = dst / "dataset_info.json"
        if info.is_file():  # LLaMA-Factory's index: the entry written now is merged into the others
            shutil.copyfile(info, tmp / info.name)
        yield tmp
        commit_folder(tmp, dst, writer)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def convert_file(
    src: str | Path,
    dst: str | Path,
    *,
    src_format: str | None = None,
    dst_format: str | None = None,
    transform: Callable[[Any], Any] | None = None,
    default_dst_format: str | None = None,
    progress: bool = False,
) -> int:
    """Read ``src`` and write its records to ``dst``, optionally through ``transform``; return the count.

    Formats are detected when not given. Both must carry the same kind of record. Nothing is left at
    ``dst`` when the input turns out to be bad (files are written atomically, folders staged).
    """
    s, d = Path(src), Path(dst)
    fin = get_format(src_format or detect_format(s))
    if fin.read is None:
        raise UserError(f"{s}: format {fin.name} can be checked but not converted")
    out_name = dst_format or output_format(d, fin.kind) or default_dst_format
    if out_name is None:
        names = [f.name for f in FORMATS.values() if f.kind == fin.kind and f.write is not None]
        raise UserError(f"{d}: cannot tell the output format from the name; give --to (one of {', '.join(names)})")
    fout = get_format(out_name)
    if fout.write is None:
        raise UserError(f"format {fout.name} cannot be written")
    if fout.kind != fin.kind:
        raise UserError(f"cannot convert {fin.name} ({fin.kind} records) to {fout.name} ({fout.kind} records)")
    if fout.folder:
        check_paths(inputs=[s], folders=[d])
    else:
        check_paths(inputs=[s], files=[d])
    records = fin.read(s)
    if transform is not None:
        records = (transform(r) for r in records)
    if progress:
        from tqdm import tqdm

        records = tqdm(records, desc=f"{fin.name} -> {fout.name}", unit=" records", disable=None)
    if fout.folder:
        with _staged_folder(d, f"format {fout.name}") as tmp:
            return fout.write(tmp, records)
    return fout.write(d, records)


__all__ = ["check_file", "convert_file", "read_records"]

"""Every file format sage-dialog reads and writes, by name, with detection and conversion.

Formats carry one *kind* of record: ``dialog`` (:class:`schema.Dialog`), ``pair``
(:class:`schema.PreferencePair`) or ``other`` (files that are only read and checked, e.g. judgement
files and data specs). :func:`convert_file` goes from any readable format to any writable one of the
same kind; :func:`check_file` lists every problem of a file (``sage-dialog validate``).

Names (``sage-dialog convert --help`` prints this table)::

    dialogs               JSONL of schema.Dialog (our canonical format)            .jsonl
    sharegpt              original SAGE JSON array, style detected / auto           .json
    sharegpt-raw | sharegpt-annotated | sharegpt-chained   ... with a fixed style   .json
    trl-sft               TRL {"messages": [...]} JSONL                            .jsonl
    llamafactory-sft      folder: mix.json + dataset_info.json                     folder
    transcripts           folder of self-play .txt transcripts (🧑‍💻 / 🤖 lines)       folder
    transcripts-full      the full/ variant (🤖✅ kept, TAB 🤖❌ dropped)             folder
    transcripts-converted tags removed, user / assistant prefixes                  folder
    pairs                 JSONL of schema.PreferencePair                           .jsonl
    prefs-original        alpaca-style ranking of the original scripts             .json
    prefs-llamafactory    sharegpt ranking file (+ dataset_info.json when a folder) .json / folder
    prefs-trl             TRL conversational preference JSONL                      .jsonl
    data-spec             data_spec.json of the mixing step (check only)            .json
    judge-input | judge-output   judgement files of the original (check only)      .json
    combined-tsv | consensus-tsv judgement tables (check only)                     .tsv
    empathetic            EmpatheticDialogues CSV (read only)                      .csv
    esconv                ESConv JSON (read only)                                  .json
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from sage_dialog.core.errors import UserError
from sage_dialog.core.io import check_paths, loads_json
from sage_dialog.core.outputs import commit_folder

Kind = Literal["dialog", "pair", "other"]
Reader = Callable[[Path], Iterable[Any]]
Writer = Callable[[Path, Iterable[Any]], int]
Checker = Callable[[Path], "tuple[list[str], int]"]


@dataclass(frozen=True)
class Format:
    """One named format: what it carries, how to read / write / check it, and whether it is a folder."""

    name: str
    kind: Kind
    description: str
    read: Reader | None = None
    write: Writer | None = None
    check: Checker | None = None
    folder: bool | None = False  # None: a file or a folder


# ---------------------------------------------------------------------------------------------
# adapters (imports are lazy so that `import sage_dialog.formats` stays cheap)


def _jsonl_check(model: type[BaseModel], extra: Callable[[Path, int, Any], list[str]] | None = None) -> Checker:
    def check(path: Path) -> tuple[list[str], int]:
        from sage_dialog.core.io import format_validation_error
        from sage_dialog.formats._common import iter_jsonl_lines

        problems: list[str] = []
        n = 0
        first: dict[str, int] = {}
        for lineno, obj in iter_jsonl_lines(path, problems):
            n += 1
            try:
                rec = model.model_validate(obj)
            except ValidationError as e:
                problems.extend(format_validation_error(path, lineno, e))
                continue
            rid = getattr(rec, "id", None)
            if isinstance(rid, str):  # ids name dialogs and pairs everywhere downstream: they must be unique
                if rid in first:
                    problems.append(f"{path}: record {lineno}: field id: duplicate id {rid!r} (first in record "
                                    f"{first[rid]})")
                else:
                    first[rid] = lineno
            if extra is not None:
                problems.extend(extra(path, lineno, rec))
        return problems, n

    return check


def _dialog_extra(path: Path, lineno: int, rec: Any) -> list[str]:
    from sage_dialog.formats._common import dialog_problems

    return dialog_problems(path, lineno, rec)


def _pair_extra(path: Path, lineno: int, rec: Any) -> list[str]:
    from sage_dialog.formats.preferences import pair_problems

    return pair_problems(path, lineno, rec)


def _jsonl_reader(model: type[BaseModel], extra: Callable[[Path, int, Any], list[str]]) -> Reader:
    """Stream validated records; the first bad line (shape or meaning) raises a UserError."""

    def read(path: Path) -> Iterable[Any]:
        from sage_dialog.core.io import format_validation_error
        from sage_dialog.formats._common import stream_jsonl

        def convert(obj: Any, lineno: int) -> Any:
            try:
                rec = model.model_validate(obj)
            except ValidationError as e:
                raise UserError(format_validation_error(path, lineno, e)) from None
            if probs := extra(path, lineno, rec):
                raise UserError(probs)
            return rec

        return stream_jsonl(path, convert)

    return read


def _write_jsonl(path: Path, records: Iterable[Any]) -> int:
    from sage_dialog.core import io

    return io.write_jsonl(path, records)


def _sharegpt(style: str | None) -> tuple[Reader, Writer, Checker]:
    def read(path: Path) -> Iterable[Any]:
        from sage_dialog.formats.sharegpt import read_sharegpt

        return read_sharegpt(path)

    def write(path: Path, records: Iterable[Any]) -> int:
        from sage_dialog.formats.sharegpt import write_sharegpt

        return write_sharegpt(path, records, style=style or "auto")  # type: ignore[arg-type]

    def check(path: Path) -> tuple[list[str], int]:
        from sage_dialog.formats.sharegpt import check_sharegpt

        return check_sharegpt(path, style=style)  # type: ignore[arg-type]

    return read, write, check


def _write_lf_sft(path: Path, records: Iterable[Any]) -> int:
    from sage_dialog.formats.llamafactory import write_sft_export

    items = list(records)
    write_sft_export(path, items)
    return len(items)


def _lazy(module: str, func: str, **kw: Any) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{module}"), func)(*args, **kw)

    return call


def _check_by_reading(reader: Reader) -> Checker:
    def check(path: Path) -> tuple[list[str], int]:
        try:
            n = sum(1 for _ in reader(path))
        except UserError as e:
            return e.problems, 0
        return [], n

    return check


FORMATS: dict[str, Format] = {}


def register(fmt: Format) -> Format:
    """Add a format to the registry (a later registration under the same name replaces it)."""
    FORMATS[fmt.name] = fmt
    return fmt


def _register_builtin() -> None:
    from sage_dialog.core.schema import Dialog, PreferencePair

    register(Format("dialogs", "dialog", "JSONL of schema.Dialog (canonical)", _jsonl_reader(Dialog, _dialog_extra),
                    _write_jsonl,
                    _jsonl_check(Dialog, _dialog_extra)))
    for style in (None, "raw", "annotated", "chained"):
        r, w, c = _sharegpt(style)
        name = "sharegpt" if style is None else f"sharegpt-{style}"
        register(Format(name, "dialog", f"original SAGE ShareGPT JSON ({style or 'style detected'})", r, w, c))
    register(Format("trl-sft", "dialog", "TRL messages JSONL", _lazy("trl", "read_trl_sft"),
                    _lazy("trl", "write_trl_sft"), _lazy("trl", "check_trl_sft")))
    register(Format("llamafactory-sft", "dialog", "LLaMA-Factory SFT folder (mix.json + dataset_info.json)",
                    _lazy("llamafactory", "read_sft_export"), _write_lf_sft,
                    _lazy("llamafactory", "check_sft_export"), folder=True))
    for variant, desc in (("plain", "self-play transcripts"), ("full", "full/ transcripts (kept and dropped)"),
                          ("converted", "converted transcripts (no tags)")):
        name = "transcripts" if variant == "plain" else f"transcripts-{variant}"
        register(Format(name, "dialog", f"folder of {desc}",
                        _lazy("transcripts", "read_transcript_dir", variant=variant),
                        _lazy("transcripts", "write_transcript_dir", variant=variant),
                        _lazy("transcripts", "check_transcript_dir", variant=variant), folder=True))
    register(Format("pairs", "pair", "JSONL of schema.PreferencePair (canonical)",
                    _jsonl_reader(PreferencePair, _pair_extra), _write_jsonl,
                    _jsonl_check(PreferencePair, _pair_extra)))
    for name, fmt_name in (("prefs-original", "original"), ("prefs-llamafactory", "llamafactory"),
                           ("prefs-trl", "trl")):
        register(Format(name, "pair", f"preference pairs, {fmt_name} form",
                        _lazy("preferences", "read_preferences", fmt=fmt_name),
                        _lazy("preferences", "write_preferences", fmt=fmt_name),
                        _lazy("preferences", "check_preferences", fmt=fmt_name),
                        folder=None if fmt_name == "llamafactory" else False))
    register(Format("search-trees", "other", "search trees of `sage-dialog search` (tree JSONL or a run folder)",
                    check=_lazy("trees", "check_trees"), folder=None))
    register(Format("data-spec", "other", "data_spec.json of the mixing step",
                    check=_lazy("data_spec", "check_data_spec")))
    for name, func in (("judge-input", "check_judge_input"), ("judge-output", "check_judge_output"),
                       ("combined-tsv", "check_combined_tsv"), ("consensus-tsv", "check_consensus_tsv")):
        register(Format(name, "other", f"original judgement file ({name})", check=_lazy("judgements", func)))
    emp = _lazy("empathetic", "read_empathetic_csv")
    register(Format("empathetic", "dialog", "EmpatheticDialogues CSV", emp, check=_check_by_reading(emp)))
    esc = _lazy("esconv", "read_esconv")
    register(Format("esconv", "dialog", "ESConv JSON", esc, check=_check_by_reading(esc)))


_register_builtin()


def get_format(name: str) -> Format:
    """The format called ``name`` (a :class:`UserError` listing the names otherwise)."""
    try:
        return FORMATS[name]
    except KeyError:
        raise UserError(f"unknown format {name!r} (known: {', '.join(FORMATS)})") from None


# ---------------------------------------------------------------------------------------------
# detection


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


# ---------------------------------------------------------------------------------------------
# conversion and checking


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


def format_table() -> str:
    """One line per format: name, kind, read/write/check, description."""
    rows = []
    for f in FORMATS.values():
        caps = "".join(c if ok else "-" for c, ok in (("r", f.read), ("w", f.write), ("c", f.check)))
        rows.append(f"  {f.name:<22} {f.kind:<6} {caps}  {f.description}")
    return "\n".join(rows)


__all__ = ["FORMATS", "Format", "check_file", "convert_file", "detect_format", "format_table", "get_format",
           "read_records", "register"]

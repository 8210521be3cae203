"""The registry of formats: each :class:`Format` by name, with its reader, writer and checker.

The built-in formats are registered when this module is first imported; their modules (one per
format family, e.g. :mod:`sage_dialog.formats.sharegpt`) are imported only when a format is used,
so that ``import sage_dialog.formats`` stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from sage_dialog.core.errors import UserError

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

    return write_sft_export(path, records).written


def _lazy(module: str, func: str, **kw: Any) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        import importlib

        return getattr(importlib.import_module(f"sage_dialog.formats.{module}"), func)(*args, **kw)

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


def format_table() -> str:
    """One line per format: name, kind, read/write/check, description."""
    rows = []
    for f in FORMATS.values():
        caps = "".join(c if ok else "-" for c, ok in (("r", f.read), ("w", f.write), ("c", f.check)))
        rows.append(f"  {f.name:<22} {f.kind:<6} {caps}  {f.description}")
    return "\n".join(rows)


__all__ = ["FORMATS", "Checker", "Format", "Kind", "Reader", "Writer", "format_table", "get_format", "register"]

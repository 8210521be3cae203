"""``data_spec.json`` of the mixing step (FORMATS.md section 2).

``{"<file>.json": {"prompt": str, "size": int}, ...}``: mixing takes the first ``size`` dialogs of
each listed file (names relative to the spec's folder) and prefixes ``prompt`` to every gpt turn.
``prompt`` may be left out (empty); ``size`` is required and at least 0.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sage_dialog.core import io
from sage_dialog.core.errors import UserError, where
from sage_dialog.formats._common import type_name


class DataSpecEntry(BaseModel):
    """How much of one file to take and the prompt to put before its gpt turns."""

    model_config = ConfigDict(extra="forbid")
    prompt: str = ""
    size: int = Field(ge=0)


DataSpec = dict[str, DataSpecEntry]


def _parse(path: Path) -> tuple[DataSpec, list[str], int]:
    data = io.read_json(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object of file -> {{prompt, size}}, got {type_name(data)}")
    if not data:
        raise UserError(f"{path}: empty spec, expected at least one file")
    spec: DataSpec = {}
    problems: list[str] = []
    for name, entry in data.items():
        try:
            spec[name] = DataSpecEntry.model_validate(entry)
        except ValidationError as e:
            problems += io.format_validation_error(path, name, e)
    return spec, problems, len(data)


def read_data_spec(path: str | Path) -> DataSpec:
    """The spec's entries in file order (a :class:`UserError` listing every bad entry)."""
    spec, problems, _ = _parse(Path(path))
    if problems:
        raise UserError(problems)
    return spec


def resolve(spec_path: str | Path, name: str) -> Path:
    """Path of a listed file (relative names are relative to the spec's folder)."""
    p = Path(name)
    return p if p.is_absolute() else Path(spec_path).parent / p


def check_data_spec(path: str | Path) -> tuple[list[str], int]:
    """Shape problems, and listed files that do not exist next to the spec."""
    p = Path(path)
    spec, problems, n = _parse(p)
    problems += [f"{where(p, name, 'file')}: no such file {str(resolve(p, name))!r}"
                 for name in spec if not resolve(p, name).is_file()]
    return problems, n


def write_data_spec(path: str | Path, spec: DataSpec) -> None:
    """Atomically write a spec (4-space indentation)."""
    io.write_json(path, {k: v.model_dump() for k, v in spec.items()}, indent=4)

"""Typed configs: YAML files plus dotted command-line overrides; unknown keys are errors.

A config is a pydantic model that forbids unknown keys (``extra="forbid"``): the SAGE loop's
``pipeline.sage_loop.LoopConfig``, a training run's ``train.config.SFTRunConfig`` /
``DPORunConfig``, a stage's settings (``stages.base.StageSettings``). :func:`load_config` reads
one from a YAML file and overrides, e.g. a file of ``configs/``::

    from sage_dialog.train.config import SFTRunConfig

    cfg = load_config(SFTRunConfig, "configs/train-sft-small.yaml", ["train.learning_rate=1e-4", "adapter.r=8"])

Override values are parsed as YAML scalars (``3`` is an int, ``[a, b]`` a list, ``null`` None).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from sage_dialog.core.errors import UserError
from sage_dialog.core.io import format_validation_error
from sage_dialog.core.limits import read_bounded
from sage_dialog.core.yamlsafe import load_yaml

C = TypeVar("C", bound=BaseModel)


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        text = read_bounded(p, what="YAML file").decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        raise UserError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    data = load_yaml(text, p)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{p}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides to a nested dict (in place) and return it."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"override {item!r}: expected KEY=VALUE, e.g. train.learning_rate=1e-4")
        try:
            value = load_yaml(raw, f"override {item!r}") if raw.strip() else ""
        except UserError:
            value = raw
        parts = key.strip().split(".")
        node = data
        for p in parts[:-1]:
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            if not isinstance(nxt, dict):
                raise UserError(f"override {item!r}: {p!r} is not a section")
            node = nxt
        node[parts[-1]] = value
    return data


def load_config(model: type[C], path: str | Path | None = None, overrides: Sequence[str] = (), *,
                base: dict[str, Any] | None = None) -> C:
    """Load ``model`` from YAML (optional), a base dict and overrides; errors name the field."""
    data: dict[str, Any] = dict(base or {})
    if path is not None:
        data.update(read_yaml(path))
    apply_overrides(data, overrides)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise UserError(format_validation_error(path or "config", None, e)) from None

"""Every stage listed in stages/base.py has the one shape: Settings, Inputs, Result and
run(settings, *, inputs, out) -> Result; and every stage module under stages/ is listed there."""

from __future__ import annotations

import dataclasses
import inspect
import pkgutil
import typing

import pytest

import sage_dialog.stages
from sage_dialog.stages.base import STAGE_MODULES, StageResult, StageSettings, stage_module

# modules and packages under stages/ that are not stages: the shape itself and what stages share
NOT_STAGES = {
    "base": "the one shape",
    "engine": "how annotate and search run their work units (local or Ray)",
    "eq_bench": "the EQ-Bench task the eval and benchmarks stages run",
}


@pytest.mark.parametrize("name", sorted(STAGE_MODULES))
def test_stage_module_has_the_one_shape(name: str) -> None:
    mod = stage_module(name)
    assert issubclass(mod.Settings, StageSettings)
    assert issubclass(mod.Result, StageResult)
    assert dataclasses.is_dataclass(mod.Inputs)
    params = inspect.signature(mod.run).parameters
    assert list(params)[:3] == ["settings", "inputs", "out"]
    assert params["inputs"].kind is inspect.Parameter.KEYWORD_ONLY and params["out"].kind is inspect.Parameter.KEYWORD_ONLY
    assert mod.Settings.model_config.get("extra") == "forbid"
    assert not [f for f, info in mod.Settings.model_fields.items() if "Path" in str(info.annotation)], \
        "settings hold no paths: those are inputs and out"
    hints = typing.get_type_hints(mod.run)
    assert hints["settings"] is mod.Settings and hints["inputs"] is mod.Inputs and hints["return"] is mod.Result


def test_every_stage_module_is_registered() -> None:
    """A module or package under stages/ is a stage (listed in STAGE_MODULES, so checked above) or a shared part."""
    found = {m.name for m in pkgutil.iter_modules(sage_dialog.stages.__path__)}
    registered = {path.split(".")[2] for path in STAGE_MODULES.values()}
    assert found - registered - set(NOT_STAGES) == set(), "register the stage in stages/base.py STAGE_MODULES"
    assert set(NOT_STAGES) <= found, "a shared part listed here is gone: drop it from NOT_STAGES"


def test_an_unknown_stage_is_a_clear_error() -> None:
    from sage_dialog.core.errors import UserError

    with pytest.raises(UserError, match="no stage 'nope'"):
        stage_module("nope")


def test_result_summary_is_flat() -> None:
    r = StageResult(counts={"n": 2}, quality={"q": 0.5, "none": None}, seconds=1.234)
    assert r.summary() == {"n": 2, "q": 0.5, "outputs": {}, "seconds": 1.23}

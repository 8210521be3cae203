"""One shape for every stage: typed settings in, a typed result out, files in one folder.

A stage module exposes four names::

    class Settings(StageSettings): ...          # what the stage does (no paths: they are inputs/out)
    @dataclass
    class Inputs: ...                           # the paths (and live objects) it reads
    class Result(StageResult): ...              # what it made: outputs, counts, usage, quality
    def run(settings: Settings, *, inputs: Inputs, out: Path) -> Result: ...

``out`` is where it writes: a folder, or for the stages whose commands name one output file
(agreement's report, steerability's report, prefs' pairs file) that file. ``run`` builds its result
in memory and returns it: the caller (a command, the loop of ``sage-dialog run``, the demo) prints
it, writes the manifest from it and gates on it. Stages do not print. A command whose flags name
files keeps a config that is the settings plus those paths, and passes ``Settings.of(config)``. The loop's config section of a stage *is* its ``Settings`` (see
``pipeline/loop_config.py``), so a setting means the same thing on the command line, in a run config
and in Python.

:data:`STAGE_MODULES` lists the stages (every stage module under ``stages/``);
``tests/test_stage_shape.py`` checks that each has the shape and that none is left out. Adding a stage is: its module (or package), its settings section in the loop config,
and one line here (see ``docs/design/adding-a-stage.md``).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

# name -> module of every stage with the one shape (the registration line of a new stage goes here)
STAGE_MODULES: dict[str, str] = {
    "annotate": "sage_dialog.stages.annotate",
    "chain": "sage_dialog.stages.chain",
    "compare": "sage_dialog.stages.compare.compare",
    "mix": "sage_dialog.stages.mix",
    "search": "sage_dialog.stages.search.shape",
    "prefs": "sage_dialog.stages.prefs",
    "agreement": "sage_dialog.stages.agreement",
    "eval": "sage_dialog.stages.eval",
    "steerability": "sage_dialog.stages.steerability",
    "rl": "sage_dialog.stages.rl",
    "benchmarks": "sage_dialog.stages.benchmarks",
}

S = TypeVar("S", bound="StageSettings")


class StageSettings(BaseModel):
    """Base of every stage's settings: unknown keys are errors, no paths (those are ``inputs``/``out``)."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def of(cls: type[S], config: BaseModel) -> S:
        """The settings part of a command's config (a subclass that adds the paths, e.g. ``MixConfig``)."""
        return cls.model_validate(config.model_dump(include=set(cls.model_fields), exclude_unset=True))


class StageResult(BaseModel):
    """What a stage made. ``counts`` and ``quality`` are flat numbers (the manifest summary and the
    gates read them); ``usage`` is token and call usage by role; ``outputs`` names the files written;
    ``warnings`` are the lines a command shows (dropped records, files without tags...)."""

    model_config = ConfigDict(extra="forbid")
    outputs: dict[str, Path] = Field(default_factory=dict, description="name -> file or folder written")
    counts: dict[str, int | float] = Field(default_factory=dict, description="how much was done")
    quality: dict[str, int | float | None] = Field(default_factory=dict, description="how good it is")
    usage: dict[str, Any] = Field(default_factory=dict, description="model calls and tokens by role")
    seconds: float = Field(0.0, ge=0, description="wall time of the stage")
    notes: dict[str, str] = Field(default_factory=dict, description="short texts recorded beside the counts "
                                  "(which judge a gate's count is about, and its figures)")
    warnings: list[str] = Field(default_factory=list, description="what the caller should show (stages do not print)")

    def summary(self) -> dict[str, Any]:
        """The flat summary a manifest records and gates check (counts and quality side by side)."""
        return {**self.counts, **{k: v for k, v in self.quality.items() if v is not None}, **self.notes,
                "outputs": {k: str(v) for k, v in self.outputs.items()}, "seconds": round(self.seconds, 2)}


def stage_module(name: str) -> ModuleType:
    """The module of stage ``name`` (imported on first use: stages pull in torch and friends)."""
    if name not in STAGE_MODULES:
        from sage_dialog.core.errors import UserError

        raise UserError(f"no stage {name!r}; stages with settings: {', '.join(sorted(STAGE_MODULES))}")
    return importlib.import_module(STAGE_MODULES[name])

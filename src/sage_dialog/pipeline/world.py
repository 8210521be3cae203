"""World plug-ins of the SAGE loop: where the data comes from and how the result is judged.

A *world* (the offline sandbox is the built-in one) adds up to three stages to ``sage-dialog run``:

* ``world`` (first): writes the raw dialogs (``raw.jsonl``) and the search seeds (``seeds.txt``)
  the loop uses when the config gives no ``raw`` files or ``search.seeds``;
* ``base`` (after ``mix``, only when the config gives no ``base_model``): builds the model that is
  fine-tuned into M1 from the SFT set (``model/``);
* ``evaluate`` (last): measures every model of the loop against the world's ground truth and writes
  ``results.json`` and ``results.md``.

Each stage reads only its own section of the config (``world.corpus``, ``world.base``,
``world.eval``), so a changed evaluation setting re-runs the evaluation alone. A world registers
itself with :func:`register_world` when its plug-in module is imported; :func:`get_world` loads
the plug-in by name through :mod:`sage_dialog.core.plugins`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field


class WorldSection(BaseModel):
    """The ``world`` section of a loop config: the plug-in's name and the settings of its stages."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="the world plug-in, e.g. sandbox")
    corpus: dict[str, Any] = Field(default_factory=dict, description="settings of the world stage (raw dialogs, seeds)")
    base: dict[str, Any] = Field(default_factory=dict, description="settings of the base-model stage")
    eval: dict[str, Any] = Field(default_factory=dict, description="settings of the evaluate stage")


@dataclass
class EvalInputs:
    """What the evaluate stage is given: the loop's models (name -> model folder, in order) and its data."""

    models: dict[str, Path]
    annotated: list[Path]
    provider: str
    backend_options: dict[str, Any]
    seed: int
    timings: dict[str, float]


class World(Protocol):
    """The three stages a world contributes (see the module docstring)."""

    def check(self, section: WorldSection) -> None:
        """Validate the section's settings (a typo stops the run before any stage starts)."""
        ...

    def prepare(self, settings: dict[str, Any], seed: int, out_dir: Path) -> dict[str, Any]:
        """Write ``raw.jsonl`` and ``seeds.txt`` into ``out_dir``; return a small summary."""
        ...

    def build_base(self, settings: dict[str, Any], seed: int, train_file: Path, out_dir: Path) -> dict[str, Any]:
        """Build the base model into ``out_dir/model`` from the SFT set ``train_file``."""
        ...

    def evaluate(self, settings: dict[str, Any], inputs: EvalInputs, out_dir: Path) -> dict[str, Any]:
        """Measure the models; write ``results.json`` and ``results.md`` into ``out_dir``."""
        ...


_WORLDS: dict[str, World] = {}


def register_world(name: str, world: World) -> None:
    """Make ``world`` the one a loop config's ``world.name: NAME`` uses."""
    _WORLDS[name] = world


def get_world(name: str) -> World:
    """The world registered as ``name``, loading its plug-in when needed."""
    if name not in _WORLDS:
        from sage_dialog.core.errors import UserError
        from sage_dialog.core.plugins import load

        load(name)
        if name not in _WORLDS:
            raise UserError(f"plug-in {name!r} registered no world")
    return _WORLDS[name]

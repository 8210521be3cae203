"""The search stage in the one shape (:mod:`sage_dialog.stages.base`), over :func:`.stage.run`.

:class:`Settings` are the fields of :class:`~sage_dialog.stages.search.stage.SearchRunConfig` without
its paths and the model searched (``seeds``, ``out``, ``assistant``: those are :class:`Inputs` and
``out``); :func:`run` builds the run config from the three and calls the stage's own ``run``, so
every default is the one ``sage-dialog search`` and the loop use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import create_model

from sage_dialog.stages.base import StageResult, StageSettings
from sage_dialog.stages.search.stage import SearchRunConfig

_NOT_SETTINGS = ("seeds", "out", "assistant")

# the run config's own fields (types, defaults, descriptions), so the two cannot drift apart
_Fields: Any = create_model(
    "_Fields", __base__=StageSettings,
    **{name: (info.annotation, info) for name, info in SearchRunConfig.model_fields.items()
       if name not in _NOT_SETTINGS},  # type: ignore[call-overload]
)


class Settings(_Fields):  # type: ignore[misc]
    """The ``search`` stage's settings: roles, personas, cache, backend options and the strategy (``config``)."""


@dataclass
class Inputs:
    """What the search reads: the seed openings and the model searched (a backend spec, e.g. ``hf:PATH``)."""

    seeds: Path
    assistant: str


class Result(StageResult):
    """Outputs: ``trees`` (one JSONL per seed), ``best`` (the best paths). Counts: seeds, nodes and the
    judge's decisions (decisions, chosen, none_good, unparsed). Usage: the search's model usage."""


def run(settings: Settings, *, inputs: Inputs, out: Path, progress: bool = False) -> Result:
    """Search from ``inputs.seeds`` with ``inputs.assistant`` into the folder ``out`` (resumable)."""
    import time

    from sage_dialog.stages.search import stage

    t0 = time.perf_counter()
    cfg = SearchRunConfig.model_validate({**settings.model_dump(exclude_unset=True), "seeds": inputs.seeds,
                                          "out": out, "assistant": inputs.assistant})
    res = stage.run(cfg, progress=progress)
    counts: dict[str, int | float] = {"seeds": res.seeds, "nodes": res.nodes,
                                      **{k: v for k, v in res.counts.items() if isinstance(v, int | float)}}
    return Result(outputs={"trees": res.trees, "best": res.best}, counts=counts, usage=res.usage,
                  seconds=time.perf_counter() - t0)

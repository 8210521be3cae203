"""The benchmarks stage: lm-eval tasks - EQ-Bench by default, shipped and offline - on every model of a loop.

The paper's claim is that SAC training improves emotional intelligence (EQ-Bench) while keeping
general abilities. In ``sage-dialog run`` a ``benchmarks:`` section (this module's :class:`Settings`)
runs the tasks on the base model and every model the loop trains (M1, M2..., DPO, RL) before the
compare stage, whose report shows the EQ-Bench table next to the win rates. The work is
:func:`sage_dialog.stages.eval.run` (lm-eval's own tasks and scorers; EQ-Bench from
:mod:`sage_dialog.stages.eq_bench`). It writes ``eval_results.json``, ``eval.md``,
``eval_samples/<model>/<task>.jsonl`` and ``manifest.json`` into ``out``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from sage_dialog.backends.base import BackendConfig
from sage_dialog.stages import eq_bench
from sage_dialog.stages.base import StageResult, StageSettings


class Settings(StageSettings):
    """The ``benchmarks:`` section of a loop config: lm-eval tasks run on every model of the loop.

    The default is EQ-Bench (shipped, offline), the paper's emotional-intelligence measure; list
    other tasks whose data is local (``include_path``: a folder of your own task YAML files).
    """

    tasks: list[str] = Field(default_factory=lambda: [eq_bench.TASK], min_length=1,
                             description="lm-eval task names (eq_bench ships with sage-dialog)")
    limit: int | None = Field(None, ge=1, description="questions per task (null: all; EQ-Bench has 171)")
    # a folder of task definitions says *which* tasks run, like a task name does
    include_path: str | None = Field(None, description="folder of your own lm-eval task YAML files")
    num_fewshot: int | None = None
    batch_size: int = Field(8, ge=1)
    chat_template: Literal["auto", "on", "off"] = Field(
        "auto", description="hf: models through the harness: auto = the chat template for chat benchmarks "
        "(eq_bench) only")
    base: bool = Field(True, description="also the base model as it is (before any training)")
    seed: int = 0

    @model_validator(mode="after")
    def _harness_installed(self) -> Settings:
        # say so when the config is read, not when the loop reaches this stage
        import importlib.util

        if importlib.util.find_spec("lm_eval") is None:
            raise ValueError("needs lm-evaluation-harness: pip install 'sage-dialog[eval]' (or benchmarks=null)")
        return self


@dataclass
class Inputs:
    """The models to score: display name -> backend spec or config (the loop fills it from its folders)."""

    models: dict[str, str | BackendConfig]


class Result(StageResult):
    """``quality``: ``"<model> <task>"`` -> the task's headline metric (EQ-Bench: its score), and
    ``min_percent_parseable`` where EQ-Bench ran; ``counts``: models and tasks."""


# the metric shown for a task in the summary (the task's first metric otherwise)
HEADLINE = {eq_bench.TASK: "eqbench"}


def run(settings: Settings, *, inputs: Inputs, out: Path) -> Result:
    """Run ``settings.tasks`` on ``inputs.models`` into ``out``; see the module docstring."""
    from sage_dialog.core.io import check_paths, finish_manifest, new_manifest
    from sage_dialog.stages import eval as harness

    check_paths(inputs=[settings.include_path], folders=[out])
    t0 = time.perf_counter()
    manifest = new_manifest("benchmarks", settings.model_dump(mode="json"), seed=settings.seed)
    ran = harness.run(harness.Settings(tasks=settings.tasks, include_path=settings.include_path, limit=settings.limit,
                                       num_fewshot=settings.num_fewshot, batch_size=settings.batch_size,
                                       via="auto", chat_template=settings.chat_template, seed=settings.seed),
                      inputs=harness.Inputs(models=inputs.models), out=out)
    results = ran.results
    quality: dict[str, int | float | None] = {}
    parseable = []
    for model, by_task in results.items():
        for task, metrics in by_task.items():
            key = HEADLINE.get(task) or next((k for k in metrics if not k.endswith("_stderr")), None)
            if key is not None and key in metrics:
                quality[f"{model} {task}"] = round(metrics[key], 4)
            if "percent_parseable" in metrics:
                parseable.append(metrics["percent_parseable"])
    if parseable:
        quality["min_percent_parseable"] = min(parseable)
    outputs = {"results": out / "eval_results.json", "samples": out / "eval_samples"}
    if (out / "eval.md").is_file():
        outputs["table"] = out / "eval.md"
    result = Result(outputs=outputs, counts={"models": len(results), "tasks": len(settings.tasks)}, quality=quality,
                    seconds=time.perf_counter() - t0)
    finish_manifest(manifest, out, outputs=[str(p.relative_to(out)) for p in sorted(out.rglob("*")) if p.is_file()],
                    summary=result.summary())
    return result


__all__ = ["HEADLINE", "Inputs", "Result", "Settings", "run"]

"""General-ability benchmarks through lm-evaluation-harness, on any of our models and backends.

Runs lm-eval tasks (built-in ones such as mmlu or hellaswag - their data must be reachable - or your
own task YAML files under --include-path) on each model. EQ-Bench (eq_bench, or eqbench) runs
offline: its 171 questions ship with sage-dialog and run through lm-eval's own eq_bench task and
scorer; it prints the score and the share of parseable answers, as EQ-Bench reports them. hf: specs run through the harness's
transformers model; other backends (openai:, vllm:, served models) through our backend protocol.
Results are merged into OUT/eval_results.json and shown in OUT/report.md and report.html when OUT
holds a comparison (run it with the same -o as sage-dialog compare), else in OUT/eval.md.
Needs the optional extra: pip install 'sage-dialog[eval]'.

Example:
  sage-dialog eval --model m=hf:smollm2-135m --tasks eq_bench --limit 20
  sage-dialog eval --model base=hf:models/base --model sage=hf:models/sac-dpo \\
      --tasks eq_bench,hellaswag --limit 200 -o runs/compare
  sage-dialog eval --model tiny=hf:/tmp/tiny --include-path my_tasks --tasks my_qa -o runs/eval
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sage_dialog.core.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    from sage_dialog.commands.config_flags import OUT, add_config_flags
    from sage_dialog.stages.eval import EvalConfig

    add_config_flags(p, EvalConfig, flags={"models": ["--model"], "out": OUT}, extra={
        "models": {"metavar": "NAME=SPEC", "help": "a model to evaluate: name and backend spec (repeat)"},
        "tasks": {"metavar": "TASKS", "help": "comma-separated lm-eval task names (repeatable)"},
        "include_path": {"metavar": "DIR", "help": "folder of your own lm-eval task YAML files"},
        "out": {"metavar": "DIR", "help": "output folder (a compare folder adds to its report; default: eval-out)"},
        "limit": {"help": "examples per task (smoke runs)"},
        "num_fewshot": {"help": "few-shot examples per question (default: the task's)"},
        "batch_size": {"help": "batch size of the harness's model (default: 8)"},
        "via": {"help": "auto: the harness's own HF model for hf: specs, our backends otherwise (default: auto)"},
        "seed": {"help": "random seed (default: 0)"},
        "chat_template": {"help": "hf: via the harness: ask through the model's chat template (auto: for chat "
                                  "benchmarks such as eq_bench only); other backends always use it"},
    })


def run(args: argparse.Namespace) -> int:
    from sage_dialog.commands.config_flags import config_from_args
    from sage_dialog.stages import eval as harness

    cfg = config_from_args(harness.EvalConfig, args)
    tasks = [t.strip() for item in cfg.tasks for t in item.split(",") if t.strip()]
    if not tasks:
        raise UserError("--tasks: give at least one task name")
    if cfg.limit is not None and cfg.limit < 1:
        raise UserError("--limit must be at least 1")
    from sage_dialog.core.io import check_paths

    check_paths(folders=[Path(cfg.out)])  # before any model loads (the stage checks --include-path)
    cfg = cfg.model_copy(update={"tasks": tasks})
    results = harness.run(harness.Settings.of(cfg), inputs=harness.Inputs(models=dict(cfg.models)),
                          out=Path(cfg.out)).results
    for model, tasks_res in results.items():
        for task, metrics in tasks_res.items():
            if task == "eq_bench" and "eqbench" in metrics:  # as EQ-Bench reports it
                print(f"{model} eq_bench: score {metrics['eqbench']:.2f} (0-100), "
                      f"parseable {metrics.get('percent_parseable', float('nan')):.1f}%")
                continue
            shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if not k.endswith("_stderr"))
            print(f"{model} {task}: {shown}")
    print(f"results: {Path(cfg.out) / 'eval_results.json'}")
    return 0

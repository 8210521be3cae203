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
    p.add_argument("--model", action="append", required=True, metavar="NAME=SPEC",
                   help="a model to evaluate: name and backend spec (repeat)")
    p.add_argument("--tasks", required=True, help="comma-separated lm-eval task names")
    p.add_argument("--include-path", type=Path, help="folder of your own lm-eval task YAML files")
    p.add_argument("-o", "--out", type=Path, default=Path("eval-out"), help="output folder (a compare folder adds to its report)")
    p.add_argument("--limit", type=int, help="examples per task (smoke runs)")
    p.add_argument("--num-fewshot", type=int)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--via", choices=["auto", "harness", "backend"], default="auto",
                   help="auto: the harness's own HF model for hf: specs, our backends otherwise")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chat-template", choices=["auto", "on", "off"], default="auto",
                   help="hf: via the harness: ask through the model's chat template (auto: for chat benchmarks "
                        "such as eq_bench only); other backends always use it")


def run(args: argparse.Namespace) -> int:
    from sage_dialog.stages import eval as harness

    models = {}
    for item in args.model:
        name, sep, spec = item.partition("=")
        if not sep or not name.strip() or not spec.strip():
            raise UserError(f"--model {item!r}: expected NAME=SPEC, e.g. --model base=hf:models/base")
        models[name.strip()] = spec.strip()
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not tasks:
        raise UserError("--tasks: give at least one task name")
    if args.limit is not None and args.limit < 1:
        raise UserError("--limit must be at least 1")
    from sage_dialog.core.io import check_paths

    check_paths(folders=[args.out])  # before any model loads (the stage checks --include-path)
    settings = harness.Settings(tasks=tasks, include_path=str(args.include_path) if args.include_path else None,
                                limit=args.limit, num_fewshot=args.num_fewshot, batch_size=args.batch_size,
                                via=args.via, seed=args.seed, chat_template=args.chat_template)
    results = harness.run(settings, inputs=harness.Inputs(models=models), out=args.out).results
    for model, tasks_res in results.items():
        for task, metrics in tasks_res.items():
            if task == "eq_bench" and "eqbench" in metrics:  # as EQ-Bench reports it
                print(f"{model} eq_bench: score {metrics['eqbench']:.2f} (0-100), "
                      f"parseable {metrics.get('percent_parseable', float('nan')):.1f}%")
                continue
            shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if not k.endswith("_stderr"))
            print(f"{model} {task}: {shown}")
    print(f"results: {args.out / 'eval_results.json'}")
    return 0

"""Run the whole SAGE loop offline on the built-in sandbox world, and measure that it works.

This is `sage-dialog run` on the shipped sandbox config (configs/demo-sandbox.yaml) with the run
folder set by -o: a corpus from a small synthetic world (user states, assistant actions, topics, a
ground truth of which action fits which state, and user dynamics), the oracle annotator, chain, mix,
SFT of a tiny model trained from scratch (M1), self-play search with the oracle user and judge,
preference pairs, a rejection-sampling round (M2), DPO, then the world's evaluation stage. It ends
with a table of each model's ground-truth reward on held-out seeds (mean, 95% interval, paired
difference to M1), oracle-judge win rates against M1 and M1's steering compliance; the table and
every artifact are kept in the output folder (evaluate/results.md, evaluate/results.json). About two
minutes on 2 CPU cores (--quick: about a third of the work). Running it again on the same folder
skips every finished stage; a changed setting re-runs only the stages after it.

Example:
  sage-dialog demo -o demo-out
  sage-dialog demo -o demo-quick --quick
  sage-dialog demo -o demo-out --set world.eval.seeds=128 --set search.config.candidates=6
  sage-dialog run configs/demo-sandbox.yaml run_dir=demo-out     # the same run, the same table
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--out", default="demo-out", help="output (run) folder (default: demo-out); "
                        "running again on it skips finished stages")
    parser.add_argument("--quick", action="store_true", help="a shortened demo (smaller corpus, fewer seeds)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a value of the demo's loop config (dotted, as for `run`), repeatable")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: 1)")
    parser.add_argument("--list", action="store_true", help="list the stages and exit")
    parser.add_argument("--no-progress", action="store_true", help="kept for old scripts (the loop draws no bars)")


def run(args: argparse.Namespace) -> int:
    from sage_dialog.commands.run import run_and_report
    from sage_dialog.core.config import load_config
    from sage_dialog.core.errors import UserError
    from sage_dialog.core.plugins import load
    from sage_dialog.pipeline.loop_config import LoopConfig
    from sage_dialog.pipeline.sage_loop import build_stages

    sandbox = load("sandbox")  # the plug-in ships the config and registers the world
    over = [*(sandbox.QUICK if args.quick else []), *args.overrides]
    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads {args.threads}: must be at least 1")
        over.append(f"threads={args.threads}")
    cfg = load_config(LoopConfig, sandbox.DEMO_CONFIG, over)
    cfg = cfg.model_copy(update={"run_dir": Path(args.out)})
    if args.list:
        for s in build_stages(cfg):
            print(f"{s.name:12s} after: {', '.join(s.deps) or '-'}")
        return 0
    from sage_dialog.commands.run import run_outputs
    from sage_dialog.core.io import check_paths

    check_paths(**run_outputs(cfg, build_stages(cfg)))  # before any stage runs: nothing of yours is replaced
    return run_and_report(cfg)

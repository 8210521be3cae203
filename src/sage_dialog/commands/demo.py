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
  sage-dialog demo rounds=2 -o demo-out                     # KEY=VALUE as a positional, as for `run`
  sage-dialog run configs/demo-sandbox.yaml run_dir=demo-out     # the same run, the same table
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from sage_dialog.commands.config_flags import add_config_option, add_output_argument

    add_output_argument(parser, default="demo-out", help="output (run) folder (default: demo-out); running again "
                        "on it skips finished stages")
    parser.add_argument("key_values", nargs="*", metavar="KEY=VALUE",
                        help="dotted overrides of the demo's loop config, as --set (e.g. rounds=2)")
    parser.add_argument("--quick", action="store_true", help="a shortened demo (smaller corpus, fewer seeds)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: 1)")
    parser.add_argument("--list", action="store_true", help="list the stages and exit")
    parser.add_argument("--no-progress", action="store_true", help="kept for old scripts (the loop draws no bars)")
    add_config_option(parser, "the loop (LoopConfig), merged over the demo's config (configs/demo-sandbox.yaml)")


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``, section by section (a file of overrides changes only the keys it names)."""
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from sage_dialog.commands.config_flags import overrides_of
    from sage_dialog.commands.run import run_and_report
    from sage_dialog.core.config import apply_overrides, read_yaml
    from sage_dialog.core.errors import UserError
    from sage_dialog.core.io import format_validation_error
    from sage_dialog.core.plugins import load
    from sage_dialog.pipeline.loop_config import LoopConfig
    from sage_dialog.pipeline.sage_loop import build_stages

    sandbox = load("sandbox")  # the plug-in ships the config and registers the world
    over = [*(sandbox.QUICK if args.quick else []), *overrides_of(args)]
    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads {args.threads}: must be at least 1")
        over.append(f"threads={args.threads}")
    data = read_yaml(sandbox.DEMO_CONFIG)
    if args.config_file is not None:
        data = _merge(data, read_yaml(args.config_file))
    apply_overrides(data, over)
    try:
        cfg = LoopConfig.model_validate(data)
    except ValidationError as e:  # the file the value came from: yours, else the demo's
        raise UserError(format_validation_error(args.config_file or sandbox.DEMO_CONFIG, None, e)) from None
    cfg = cfg.model_copy(update={"run_dir": Path(args.out)})
    if args.list:
        for s in build_stages(cfg):
            print(f"{s.name:12s} after: {', '.join(s.deps) or '-'}")
        return 0
    from sage_dialog.commands.run import run_outputs
    from sage_dialog.core.io import check_paths

    check_paths(**run_outputs(cfg, build_stages(cfg)))  # before any stage runs: nothing of yours is replaced
    return run_and_report(cfg)

"""Run the whole SAGE loop offline on the built-in sandbox world, and measure that it works.

Builds a corpus from a small synthetic world (user states, assistant actions, topics, a ground
truth of which action fits which state, and user dynamics), then runs every stage through the same
code real runs use: annotate (oracle annotator), chain, mix, SFT of a tiny model trained from
scratch (M1), self-play search with an oracle judge, preference pairs, a rejection-sampling round
(M2), DPO, a comparison with an oracle pairwise judge and a steerability check. It ends with a table
of each model's ground-truth reward on held-out seeds (mean, 95% interval, paired difference to M1),
judge win rates against M1 and M1's steering compliance; the table and every artifact are kept in
the output folder (results.md, results.json). Takes a few minutes on 2 CPU cores (--quick: ~1/3).

Example:
  sage-dialog demo -o demo-out
  sage-dialog demo -o demo-quick --quick
  sage-dialog demo -o demo-out --set eval_seeds=128 --set candidates=6
  sage-dialog demo -o demo-user --set user=model    # a tiny model plays the user (roles flipped)
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--out", default="demo-out", help="output folder (default: demo-out); "
                        "running again on it skips finished stages")
    parser.add_argument("--quick", action="store_true", help="a shortened demo (smaller corpus, fewer seeds)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a demo setting (see sage_dialog.sandbox.demo.DemoConfig), repeatable")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: 1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from sage_dialog.core.config import apply_overrides
    from sage_dialog.core.errors import UserError
    from sage_dialog.sandbox.demo import DemoConfig, format_table, run_demo

    over = apply_overrides({}, args.overrides)
    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads {args.threads}: must be at least 1")
        over["threads"] = args.threads
    unknown = sorted(set(over) - set(DemoConfig.model_fields))
    if unknown:
        raise UserError(f"--set {unknown[0]}: unknown demo setting; known: {', '.join(DemoConfig.model_fields)}")
    try:
        cfg = DemoConfig.quick(**over) if args.quick else DemoConfig(**over)
    except ValueError as e:
        raise UserError(f"--set: {str(e).splitlines()[0]}: {e}") from None
    results = run_demo(args.out, cfg, progress=not args.no_progress)
    print(format_table(results))
    print(f"\nresults and every artifact: {args.out}/ (results.md, results.json)", file=sys.stderr)
    return 0

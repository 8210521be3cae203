"""Build preference pairs and best paths from search trees or original SAGE transcripts.

At every assistant decision the kept candidate is "chosen" and each dropped one (or the first K,
hardest first by judge score) is "rejected", after the history of the chosen path. The kept path of
each tree is written too, for rejection-sampling fine-tuning.

Example:
  sage-dialog prefs runs/search -o pairs.jsonl --format trl --negatives 2
  sage-dialog prefs SEARCH_DIR --format sage-comparison --negatives 1 -o pairs.json
  sage-dialog prefs runs/search -o prefs-lf --format llamafactory --best-paths best.jsonl

The selection options are the keys of stages.prefs.Settings: flags, --config FILE or --set KEY=VALUE.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import get_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from sage_dialog.commands.config_flags import add_config_flags, add_output_argument, register_flag
    from sage_dialog.stages.prefs import OutFormat, Settings

    parser.add_argument("source", type=Path,
                        help="folder of search-tree JSONL, or of original transcripts (with full/)")
    add_output_argument(parser, dest="output", type=Path, required=True,
                        help="pairs file (a folder for --format llamafactory)")
    parser.add_argument("--format", default="jsonl", choices=get_args(OutFormat),
                        help="jsonl: sage-dialog records; trl: TRL conversational; llamafactory: sharegpt "
                             "ranking folder; sage-comparison: the original alpaca-style ranking (default: jsonl)")
    add_config_flags(parser, Settings, extra={"negatives": {"metavar": "K"}})
    register_flag(parser, parser.add_argument(
        "--strip-tags", dest="history_tags", action="store_false", default=argparse.SUPPRESS,
        help="remove SAC tags from the history turns (= --no-history-tags)"))
    parser.add_argument("--best-paths", type=Path, default=None,
                        help="also write the kept path of each tree as dialog JSONL (for SFT)")


def run(args: argparse.Namespace) -> int:
    from sage_dialog.commands.config_flags import config_from_args
    from sage_dialog.stages import prefs

    res = prefs.run(config_from_args(prefs.Settings, args), inputs=prefs.Inputs(source=args.source), out=args.output,
                    form=args.format, best_paths=args.best_paths)
    c = res.counts
    if c["unparsed_decisions_left_out"]:
        print(f"left out {c['unparsed_decisions_left_out']} decisions whose judge answer was unparsed (they carry no "
              "preference; --include-unparsed keeps them)", file=sys.stderr)
    print(f"wrote {c['pairs']} pairs from {c['seeds']} seeds to {args.output} ({args.format})")
    if args.best_paths:
        print(f"wrote {c['best_paths']} best paths to {args.best_paths}")
    return 0

"""Build preference pairs and best paths from search trees or original SAGE transcripts.

At every assistant decision the kept candidate is "chosen" and each dropped one (or the first K,
hardest first by judge score) is "rejected", after the history of the chosen path. The kept path of
each tree is written too, for rejection-sampling fine-tuning.

Example:
  sage-dialog prefs runs/search -o pairs.jsonl --format trl --negatives 2
  sage-dialog prefs SEARCH_DIR --format sage-comparison --negatives 1 -o pairs.json
  sage-dialog prefs runs/search -o prefs-lf --format llamafactory --best-paths best.jsonl

The selection options are the keys of PrefsConfig: flags, --config FILE or --set KEY=VALUE.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import get_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from sage_dialog.commands.config_flags import add_config_flags, add_output_argument, register_flag
    from sage_dialog.stages.prefs import OutFormat, PrefsConfig

    parser.add_argument("source", type=Path,
                        help="folder of search-tree JSONL, or of original transcripts (with full/)")
    add_output_argument(parser, dest="output", type=Path, required=True,
                        help="pairs file (a folder for --format llamafactory)")
    parser.add_argument("--format", default="jsonl", choices=get_args(OutFormat),
                        help="jsonl: sage-dialog records; trl: TRL conversational; llamafactory: sharegpt "
                             "ranking folder; sage-comparison: the original alpaca-style ranking (default: jsonl)")
    add_config_flags(parser, PrefsConfig, extra={"negatives": {"metavar": "K"}})
    register_flag(parser, parser.add_argument(
        "--strip-tags", dest="history_tags", action="store_false", default=argparse.SUPPRESS,
        help="remove SAC tags from the history turns (= --no-history-tags)"))
    parser.add_argument("--best-paths", type=Path, default=None,
                        help="also write the kept path of each tree as dialog JSONL (for SFT)")


def run(args: argparse.Namespace) -> int:
    from sage_dialog.commands.config_flags import config_from_args
    from sage_dialog.core.errors import UserError
    from sage_dialog.core.io import check_paths, write_jsonl
    from sage_dialog.stages.prefs import PrefsConfig, load_source, no_pairs_message, write_pairs

    cfg = config_from_args(PrefsConfig, args)
    if cfg.negatives is not None and cfg.negatives < 1:
        raise UserError(f"--negatives {cfg.negatives}: must be at least 1")
    as_folder = args.format == "llamafactory"
    check_paths(inputs=[args.source], files=[None if as_folder else args.output, args.best_paths],
                folders=[args.output if as_folder else None])
    counts: Counter[str] = Counter()
    pairs, paths = load_source(args.source, cfg, counts)
    if counts["unparsed_decisions"]:
        print(f"left out {counts['unparsed_decisions']} decisions whose judge answer was unparsed (they carry no "
              "preference; --include-unparsed keeps them)", file=sys.stderr)
    if not pairs:
        raise UserError(no_pairs_message(args.source, counts))
    n = write_pairs(args.output, pairs, args.format)
    print(f"wrote {n} pairs from {len({p.seed for p in pairs})} seeds to {args.output} ({args.format})")
    if args.best_paths:
        write_jsonl(args.best_paths, paths)
        print(f"wrote {len(paths)} best paths to {args.best_paths}")
    return 0

"""Import EmpatheticDialogues CSV or ESConv JSON as dialogs (Dialog JSONL), optionally with seeds.

Each conversation becomes one dialog with the user first and roles alternating (consecutive turns
of one speaker are merged). ESConv supporter strategies become the assistant turns'
``a_motivation``; the spellings of published ESConv files (``speaker``/``listener``, ``Questions``,
``Other``, ...) are read, others are mapped with --label-map or kept with --keep-unknown, and a
file with unknown values is refused with one message listing each value and its count. ``--seeds-out`` also writes each dialog's first user utterance, one per line (the
original ``test_sent.tsv`` shape that self-play starts from). An EmpatheticDialogues seed file
(``.tsv``/``.txt``, one utterance per line) is read as one-turn dialogs.

Example:
  sage-dialog import empathetic ed/train.csv -o ed.jsonl --seeds-out seeds.txt
  sage-dialog import esconv ESConv.json -o esconv.jsonl
  sage-dialog import esconv FailedESConv.json -o failed.jsonl --label-map strategies.yaml
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("corpus", choices=["empathetic", "esconv"], help="which corpus FILE is from")
    parser.add_argument("file", type=Path, help="the corpus file (ED: CSV or seed .tsv/.txt; ESConv: JSON)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="Dialog JSONL to write")
    parser.add_argument("--seeds-out", type=Path, help="also write first user utterances, one per line")
    parser.add_argument("--limit", type=int, help="import only the first N dialogs")
    parser.add_argument("--label-map", type=Path, metavar="FILE",
                        help="ESConv: JSON/YAML mapping of strategy spellings to labels, e.g. "
                             '{"Direct Guidance": "Providing Suggestions"}')
    parser.add_argument("--keep-unknown", action="store_true",
                        help="ESConv: keep strategies that are in no label set as written (default: stop and list them)")


def run(args: argparse.Namespace) -> int:
    from sage_dialog.stages.annotate import import_corpus

    n, seeds = import_corpus(args.corpus, args.file, args.output, seeds_out=args.seeds_out, limit=args.limit,
                             label_map=args.label_map, keep_unknown=args.keep_unknown)
    print(f"wrote {n} dialogs to {args.output}" + (f", {seeds} seeds to {args.seeds_out}" if args.seeds_out else ""),
          file=sys.stderr)
    return 0

"""Import EmpatheticDialogues CSV, ESConv JSON or the chitchat corpus as dialogs (Dialog JSONL).

Each conversation becomes one dialog with the user first and roles alternating (consecutive turns
of one speaker are merged). ESConv supporter strategies become the assistant turns'
``a_motivation``; the spellings of published ESConv files (``speaker``/``listener``, ``Questions``,
``Other``, ...) are read, others are mapped with --label-map or kept with --keep-unknown, and a
file with unknown values is refused with one message listing each value and its count. ``--seeds-out`` also writes each dialog's first user utterance, one per line (the
original ``test_sent.tsv`` shape that self-play starts from). An EmpatheticDialogues seed file
(``.tsv``/``.txt``, one utterance per line) is read as one-turn dialogs. ``chitchat`` reads the
Chit-Chat Challenge ``dataset.json`` (first speaker as user, each speaker's run of messages joined
into one turn); without FILE it reads the installed ``chitchat-dataset`` package's copy.
``--min-turns`` skips (and counts) shorter dialogs, ``--max-turns`` cuts longer ones; ``--limit``
counts the dialogs written.

Example:
  sage-dialog import empathetic ed/train.csv -o ed.jsonl --seeds-out seeds.txt
  sage-dialog import esconv ESConv.json -o esconv.jsonl
  sage-dialog import esconv FailedESConv.json -o failed.jsonl --label-map strategies.yaml
  sage-dialog import chitchat -o chitchat.jsonl --limit 100 --min-turns 4 --seeds-out seeds.txt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("corpus", choices=["empathetic", "esconv", "chitchat"], help="which corpus FILE is from")
    parser.add_argument(
        "file", type=Path, nargs="?",
        help="the corpus file (ED: CSV or seed .tsv/.txt; ESConv: JSON; chitchat: dataset.json, default: "
        "the installed chitchat-dataset package's)",
    )
    parser.add_argument("-o", "--output", type=Path, required=True, help="Dialog JSONL to write")
    parser.add_argument("--seeds-out", type=Path, help="also write first user utterances, one per line")
    parser.add_argument("--limit", type=int, help="import only the first N dialogs (after --min-turns)")
    parser.add_argument("--min-turns", type=int, default=None,
                        help="skip dialogs with fewer turns (default: 2 for chitchat, 1 otherwise)")
    parser.add_argument("--max-turns", type=int, default=None, help="cut longer dialogs to their first N turns")
    parser.add_argument("--label-map", type=Path, metavar="FILE",
                        help="ESConv: JSON/YAML mapping of strategy spellings to labels, e.g. "
                             '{"Direct Guidance": "Providing Suggestions"}')
    parser.add_argument("--keep-unknown", action="store_true",
                        help="ESConv: keep strategies that are in no label set as written (default: stop and list them)")


def run(args: argparse.Namespace) -> int:
    from sage_dialog.formats.corpora import import_corpus

    min_turns = args.min_turns if args.min_turns is not None else (2 if args.corpus == "chitchat" else 1)
    got = import_corpus(args.corpus, args.file, args.output, seeds_out=args.seeds_out, limit=args.limit,
                        min_turns=min_turns, max_turns=args.max_turns,
                        label_map=args.label_map, keep_unknown=args.keep_unknown)
    if got.skipped_line():
        print(got.skipped_line(), file=sys.stderr)
    n, seeds = got.dialogs, got.seeds
    print(f"wrote {n} dialogs to {args.output}" + (f", {seeds} seeds to {args.seeds_out}" if args.seeds_out else ""),
          file=sys.stderr)
    return 0

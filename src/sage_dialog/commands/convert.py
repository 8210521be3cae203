"""Convert between dialog, transcript and preference formats.

Formats are detected from names and contents (--from / --to to choose); records of one kind convert
into any writable format of the same kind: dialogs (JSONL, original ShareGPT files, TRL messages,
LLaMA-Factory folders, self-play transcript folders) or preference pairs (JSONL, original alpaca
ranking, LLaMA-Factory sharegpt ranking, TRL). Bad input stops with one line per problem and leaves
no output behind. `sage-dialog convert --list` prints every format.

Example:
  sage-dialog convert data1_reannot.json data1.jsonl
  sage-dialog convert data1.jsonl sft.jsonl --to trl-sft
  sage-dialog convert search_traj/ kept.jsonl --from transcripts
  sage-dialog convert pairs.jsonl lf-data/ --to prefs-llamafactory
"""

from __future__ import annotations

import argparse
import sys

from sage_dialog.core.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", nargs="?", help="file or folder to read")
    parser.add_argument("output", nargs="?", help="file or folder to write")
    parser.add_argument("--from", dest="src_format", metavar="FORMAT", help="input format (default: detected)")
    parser.add_argument("--to", dest="dst_format", metavar="FORMAT",
                        help="output format (default: from the output name: .jsonl -> dialogs/pairs, .json -> sharegpt)")
    parser.add_argument("--list", action="store_true", help="list the formats and exit")


def run(args: argparse.Namespace) -> int:
    from sage_dialog.formats import convert_file, format_table

    if args.list:
        print("name                   kind   r/w/c  description\n" + format_table())
        return 0
    if not args.input or not args.output:
        raise UserError("convert needs INPUT and OUTPUT (see sage-dialog convert --help)")
    n = convert_file(args.input, args.output, src_format=args.src_format, dst_format=args.dst_format,
                     progress=True)
    print(f"wrote {n} records to {args.output}", file=sys.stderr)
    return 0

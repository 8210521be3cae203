"""Turn annotated dialogs into State-Action Chain dialogs.

Each human turn's tags are renamed u_* and moved in front of the following assistant turn, the
assistant's own tags are renamed a_*, and human turns become plain text, exactly as the original
SAGE scripts did. Input: an annotated ShareGPT file (every turn tagged) or dialogs JSONL; output
format from the name (.json -> chained ShareGPT, .jsonl -> dialogs) or --to.

Example:
  sage-dialog chain data1_reannot.json data1_chained.json
  sage-dialog chain annotated.jsonl sac.jsonl
  sage-dialog chain annotated.jsonl sft.jsonl --to trl-sft
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="annotated dialogs (ShareGPT .json, dialogs .jsonl, ...)")
    parser.add_argument("output", help="where to write the chained dialogs")
    parser.add_argument("--from", dest="src_format", metavar="FORMAT", help="input format (default: detected)")
    parser.add_argument("--to", dest="dst_format", metavar="FORMAT", help="output format (default: from the name)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sage_dialog.stages import chain

    dst = Path(args.output)
    res = chain.run(chain.Settings(src_format=args.src_format, dst_format=args.dst_format),
                    inputs=chain.Inputs(files={dst.name: Path(args.input)}), out=dst.parent, progress=True)
    for msg in res.warnings:
        print(f"warning: {msg}", file=sys.stderr)
    print(f"chained {res.counts['dialogs']} dialogs into {args.output}", file=sys.stderr)
    return 0

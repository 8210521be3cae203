"""Per-field agreement between two annotation runs (two annotators, or one annotator twice).

Dialogs are matched by id, turns by position. For user and assistant turns separately, each field
gets exact agreement, Cohen's kappa when it is a closed set (--closed), and a fuzzy score for open
vocabulary (difflib ratio of labels; token Jaccard of topic lists).

Example:
  sage-dialog annotate sample.jsonl -o run_a.jsonl --annotator openai:model-a
  sage-dialog annotate sample.jsonl -o run_b.jsonl --annotator openai:model-b
  sage-dialog agreement run_a.jsonl run_b.jsonl --closed assistant.motivation -o agreement.json
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("a", type=Path, help="first annotated Dialog JSONL")
    parser.add_argument("b", type=Path, help="second annotated Dialog JSONL")
    parser.add_argument("--closed", action="append", default=[], metavar="FIELD",
                        help="score FIELD or ROLE.FIELD as a closed set with Cohen's kappa (repeatable)")
    parser.add_argument("-o", "--output", type=Path, help="also write the report as JSON")


def run(args: argparse.Namespace) -> int:
    from sage_dialog.core.config import load_config
    from sage_dialog.core.io import check_paths
    from sage_dialog.stages import agreement

    check_paths(inputs=[args.a, args.b], files=[args.output])

    cfg = load_config(agreement.AgreementConfig, base={"a": args.a, "b": args.b, "closed": args.closed,
                                                        "output": args.output})
    agreement.run(cfg)
    return 0

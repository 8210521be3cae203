"""Mix and blend datasets from a data spec into trainer-ready files (TRL JSONL + LLaMA-Factory folder).

SPEC is the original data_spec.json: {"file.json": {"prompt": "...", "size": N}, ...} (paths relative
to the spec). Each file gives its first SIZE dialogs, PROMPT is prefixed to every gpt turn, dialogs
that are empty, do not alternate human/gpt from a human start or have extra turn keys are dropped
with a warning naming them, and the rest are shuffled. Optional: "proportion" per file with --total,
--blend K (append K random dialogs to each, after cutting to an even length), a held-out split,
deduplication (on by default). Files may be ShareGPT JSON or any dialog format sage-dialog
reads (Dialog JSONL, TRL messages JSONL, a LLaMA-Factory folder, transcripts, ED CSV, ESConv JSON).

Writes OUTDIR/train.jsonl (+ valid.jsonl) as TRL messages, OUTDIR/llamafactory/ (mix.json and its
dataset_info.json entry "data_mix"; train with dataset_dir: OUTDIR/llamafactory, dataset: data_mix)
and OUTDIR/manifest.json with counts and warnings.

Example:
  sage-dialog mix data_spec.json -o mixed --seed 0 --valid-fraction 0.05 --blend 2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", type=Path, help="data spec JSON")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of the shuffle, sampling and blending (default 0)")
    parser.add_argument("--blend", type=int, nargs="?", const=2, default=0, metavar="K",
                        help="blend: append K random dialogs to each (K defaults to 2 as in the original)")
    parser.add_argument("--valid-fraction", type=float, default=0.0, help="share held out for validation")
    parser.add_argument("--valid-size", type=int, help="number of dialogs held out (overrides --valid-fraction)")
    parser.add_argument("--total", type=int, help="mix size when the spec gives proportions")
    parser.add_argument("--even", action="store_true",
                        help="cut every dialog to an even number of turns (LLaMA-Factory skips dialogs ending on a human turn)")
    parser.add_argument("--no-dedup", action="store_true", help="keep exact duplicate dialogs")
    parser.add_argument("--no-shuffle", action="store_true", help="keep file order")
    parser.add_argument("--name", default="data_mix", help="dataset name in dataset_info.json (default data_mix)")


def run(args: argparse.Namespace) -> int:
    from sage_dialog.core.config import load_config
    from sage_dialog.core.io import read_json
    from sage_dialog.stages import mix

    cfg = load_config(mix.MixConfig, base={
        "spec": args.spec, "output": args.output, "seed": args.seed, "blend": args.blend,
        "valid_fraction": args.valid_fraction, "valid_size": args.valid_size, "total": args.total,
        "dedup": not args.no_dedup, "even": args.even, "shuffle": not args.no_shuffle, "name": args.name,
    })
    out = mix.run(cfg)
    s = read_json(out / "manifest.json")["summary"]
    print(f"wrote {s['train']} train and {s['valid']} valid dialogs to {out} "
          f"(dropped {s['dropped_invalid']} invalid, {s['dropped_duplicate']} duplicates; {s['n_warnings']} warnings)",
          file=sys.stderr)
    return 0

"""Merge a LoRA adapter into a full model, saved with its tokenizer and training chat template.

Example:
  sage-dialog export runs/sft -o runs/sft-merged
  sage-dialog export runs/sft -o runs/sft-merged --base /models/Mixtral-8x7B-Instruct-v0.1 --dtype bfloat16

The result loads with transformers' AutoModelForCausalLM (no PEFT) and with `hf:runs/sft-merged`.
A full fine-tuned folder is re-saved as is (useful to change dtype).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("adapter_dir", help="training output folder (LoRA adapter or full model)")
    parser.add_argument("-o", "--output", required=True, help="folder for the merged model")
    parser.add_argument("--base", help="base model, when not the one recorded in adapter_config.json")
    parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto",
                        help="dtype of the saved weights (auto: as stored in the base model)")


def run(args: argparse.Namespace) -> int:
    from sage_dialog.core.io import check_paths
    from sage_dialog.train.export import export_model

    check_paths(inputs=[args.adapter_dir], folders=[args.output])

    out = export_model(args.adapter_dir, args.output, base=args.base, dtype=args.dtype)
    print(f"wrote {out}")
    return 0

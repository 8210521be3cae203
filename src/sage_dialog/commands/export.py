"""Merge a LoRA adapter into a full model, saved with its tokenizer and training chat template.

Example:
  sage-dialog export runs/sft -o runs/sft-merged
  sage-dialog export runs/sft -o runs/sft-merged --base /models/Mixtral-8x7B-Instruct-v0.1 --dtype bfloat16

The result loads with transformers' AutoModelForCausalLM (no PEFT) and with `hf:runs/sft-merged`.
A full fine-tuned folder is re-saved as is (useful to change dtype).
"""

from __future__ import annotations

import argparse
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ExportSettings(BaseModel):
    """Settings of ``sage-dialog export``."""

    model_config = ConfigDict(extra="forbid")
    adapter_dir: str = Field(description="training output folder (LoRA adapter or full model)")
    output: str = Field(description="folder for the merged model")
    base: str | None = Field(None, description="base model, when not the one recorded in adapter_config.json")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="dtype of the saved weights (auto: as stored in the base model)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from sage_dialog.commands.config_flags import OUT, add_config_flags

    add_config_flags(parser, ExportSettings, positional=["adapter_dir"], flags={"output": OUT},
                     extra={"output": {"metavar": "DIR"}, "base": {"metavar": "MODEL"}})


def run(args: argparse.Namespace) -> int:
    from sage_dialog.commands.config_flags import config_from_args, settings_into
    from sage_dialog.core.io import check_paths
    from sage_dialog.train.export import export_model

    args = settings_into(args, config_from_args(ExportSettings, args))
    check_paths(inputs=[args.adapter_dir], folders=[args.output])

    out = export_model(args.adapter_dir, args.output, base=args.base, dtype=args.dtype)
    print(f"wrote {out}")
    return 0

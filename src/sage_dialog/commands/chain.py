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

from pydantic import BaseModel, ConfigDict, Field


class ChainSettings(BaseModel):
    """Settings of ``sage-dialog chain``."""

    model_config = ConfigDict(extra="forbid")
    input: str = Field(description="annotated dialogs (ShareGPT .json, dialogs .jsonl, ...)")
    output: str = Field(description="where to write the chained dialogs")
    src_format: str | None = Field(None, description="input format (default: detected)")
    dst_format: str | None = Field(None, description="output format (default: from the name)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from sage_dialog.commands.config_flags import add_config_flags

    add_config_flags(parser, ChainSettings, positional=["input", "output"],
                     flags={"src_format": ["--from"], "dst_format": ["--to"]},
                     extra={"src_format": {"metavar": "FORMAT"}, "dst_format": {"metavar": "FORMAT"}})


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sage_dialog.commands.config_flags import config_from_args
    from sage_dialog.stages import chain

    cfg = config_from_args(ChainSettings, args)
    dst = Path(cfg.output)
    res = chain.run(chain.Settings.of(cfg), inputs=chain.Inputs(files={dst.name: Path(cfg.input)}), out=dst.parent,
                    progress=True)
    for msg in res.warnings:
        print(f"warning: {msg}", file=sys.stderr)
    print(f"chained {res.counts['dialogs']} dialogs into {cfg.output}", file=sys.stderr)
    return 0

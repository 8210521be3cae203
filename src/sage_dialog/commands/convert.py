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

from pydantic import BaseModel, ConfigDict, Field

from sage_dialog.core.errors import UserError


class ConvertSettings(BaseModel):
    """Settings of ``sage-dialog convert``."""

    model_config = ConfigDict(extra="forbid")
    input: str | None = Field(None, description="file or folder to read")
    output: str | None = Field(None, description="file or folder to write")
    src_format: str | None = Field(None, description="input format (default: detected)")
    dst_format: str | None = Field(None, description="output format (default: from the output name: .jsonl -> "
                                   "dialogs/pairs, .json -> sharegpt)")
    list_formats: bool = Field(False, description="list the formats and exit")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from sage_dialog.commands.config_flags import add_config_flags

    add_config_flags(parser, ConvertSettings, positional=["input", "output"],
                     flags={"src_format": ["--from"], "dst_format": ["--to"], "list_formats": ["--list"]},
                     extra={"src_format": {"metavar": "FORMAT"}, "dst_format": {"metavar": "FORMAT"},
                            "list_formats": {"action": "store_true"}})


def run(args: argparse.Namespace) -> int:
    from sage_dialog.commands.config_flags import config_from_args, settings_into
    from sage_dialog.formats import convert_file, format_table

    args = settings_into(args, config_from_args(ConvertSettings, args))
    if args.list_formats:
        print("name                   kind   r/w/c  description\n" + format_table())
        return 0
    if not args.input or not args.output:
        raise UserError("convert needs INPUT and OUTPUT (see sage-dialog convert --help)")
    n = convert_file(args.input, args.output, src_format=args.src_format, dst_format=args.dst_format,
                     progress=True)
    print(f"wrote {n} records to {args.output}", file=sys.stderr)
    return 0

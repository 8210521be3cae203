"""Check a file against its format and list every problem.

Every problem is printed on its own line naming the file, the record (1-based line or array
position, or the key) and the field; the exit code is 2 if there is any, 0 with a one-line summary
otherwise. The format is detected from the name and contents unless --format is given
(`sage-dialog convert --list` prints the names). JSONL files are streamed.

Example:
  sage-dialog validate data1_reannot.json
  sage-dialog validate data1_reannot.json --format sharegpt-annotated
  sage-dialog validate search_traj/full --format transcripts-full
"""

from __future__ import annotations

import argparse

from pydantic import BaseModel, ConfigDict, Field

from sage_dialog.core.errors import UserError


class ValidateSettings(BaseModel):
    """Settings of ``sage-dialog validate``."""

    model_config = ConfigDict(extra="forbid")
    file: str = Field(description="file or folder to check")
    fmt: str | None = Field(None, description="format name (default: detected)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from sage_dialog.commands.config_flags import add_config_flags

    add_config_flags(parser, ValidateSettings, positional=["file"], flags={"fmt": ["--format", "-f"]},
                     extra={"fmt": {"metavar": "FORMAT"}})


def run(args: argparse.Namespace) -> int:
    from sage_dialog.commands.config_flags import config_from_args, settings_into
    from sage_dialog.formats import check_file

    args = settings_into(args, config_from_args(ValidateSettings, args))
    name, problems, n = check_file(args.file, args.fmt)
    if problems:
        raise UserError(problems)
    print(f"OK: {args.file}: {name}, {n} records")
    return 0

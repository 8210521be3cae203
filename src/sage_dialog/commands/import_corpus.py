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
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ImportSettings(BaseModel):
    """Settings of ``sage-dialog import``."""

    model_config = ConfigDict(extra="forbid")
    corpus: Literal["empathetic", "esconv", "chitchat"] = Field(description="which corpus FILE is from")
    file: Path | None = Field(None, description="the corpus file (ED: CSV or seed .tsv/.txt; ESConv: JSON; chitchat: "
                              "dataset.json, default: the installed chitchat-dataset package's)")
    output: Path = Field(description="Dialog JSONL to write")
    seeds_out: Path | None = Field(None, description="also write first user utterances, one per line")
    limit: int | None = Field(None, description="import only the first N dialogs (after --min-turns)")
    min_turns: int | None = Field(None, description="skip dialogs with fewer turns (default: 2 for chitchat, 1 "
                                  "otherwise)")
    max_turns: int | None = Field(None, description="cut longer dialogs to their first N turns")
    label_map: Path | None = Field(None, description="ESConv: JSON/YAML mapping of strategy spellings to labels, "
                                   'e.g. {"Direct Guidance": "Providing Suggestions"}')
    keep_unknown: bool = Field(False, description="ESConv: keep strategies that are in no label set as written "
                               "(default: stop and list them)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from sage_dialog.commands.config_flags import OUT, add_config_flags

    add_config_flags(parser, ImportSettings, positional=["corpus", "file"], flags={"output": OUT},
                     extra={"label_map": {"metavar": "FILE"}})


def run(args: argparse.Namespace) -> int:
    from sage_dialog.commands.config_flags import config_from_args, settings_into
    from sage_dialog.formats.corpora import import_corpus

    args = settings_into(args, config_from_args(ImportSettings, args))
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

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

Every option is a key of the config (MixConfig): give them as flags, in a YAML file with --config,
or as --set KEY=VALUE; flags win over the file, --set over flags.

Example:
  sage-dialog mix data_spec.json -o mixed --seed 0 --valid-fraction 0.05 --blend 2
  sage-dialog mix --config mix.yaml --set valid_size=100
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from sage_dialog.commands.config_flags import OUT, add_config_flags
    from sage_dialog.stages.mix import MixConfig

    add_config_flags(parser, MixConfig, positional=["spec"], flags={"output": OUT},
                     extra={"blend": {"nargs": "?", "const": 2, "metavar": "K"}})


def run(args: argparse.Namespace) -> int:
    from sage_dialog.commands.config_flags import config_from_args
    from sage_dialog.core import console
    from sage_dialog.stages import mix

    cfg = config_from_args(mix.MixConfig, args)
    console.stage_log(cfg.output, "mix", carry_over=True)  # the output may come from --config
    res = mix.run(mix.Settings.of(cfg), inputs=mix.Inputs(spec=cfg.spec), out=cfg.output)
    for msg in res.warnings:
        print(f"warning: {msg}", file=sys.stderr)
    s, out = res.counts, cfg.output
    print(f"wrote {s['train']} train and {s['valid']} valid dialogs to {out} "
          f"(dropped {s['dropped_invalid']} invalid, {s['dropped_duplicate']} duplicates; {s['n_warnings']} warnings)",
          file=sys.stderr)
    return 0

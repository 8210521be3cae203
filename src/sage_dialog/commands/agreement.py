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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from sage_dialog.commands.config_flags import OUT, add_config_flags
    from sage_dialog.stages.agreement import AgreementConfig

    add_config_flags(parser, AgreementConfig, positional=["a", "b"], flags={"output": OUT},
                     extra={"closed": {"metavar": "FIELD"}})


def run(args: argparse.Namespace) -> int:
    from sage_dialog.commands.config_flags import config_from_args
    from sage_dialog.core.io import check_paths
    from sage_dialog.stages import agreement

    cfg = config_from_args(agreement.AgreementConfig, args)  # positionals and flags, --config, --set
    check_paths(inputs=[cfg.a, cfg.b], files=[cfg.output])
    res = agreement.run(agreement.Settings.of(cfg), inputs=agreement.Inputs(a=cfg.a, b=cfg.b), out=cfg.output)
    print(agreement.render(res.report))
    return 0

"""Label every utterance with motivation, emotion and topics, using any backend or the oracle.

The annotator sees each whole dialog and answers JSON for all of its turns (later turns inform
earlier labels). Answers are validated against a schema, repaired or retried (--max-attempts), and
dialogs that still fail go to the rejects file with the reason. Re-running on the same input with a
--cache makes zero model calls. A label-distribution summary is printed and written as JSON.

Input: Dialog JSONL, raw ShareGPT JSON, TRL messages, a LLaMA-Factory folder, transcripts,
EmpatheticDialogues CSV, ESConv JSON or a seed file (one utterance per line).
Output: Dialog JSONL whose user turns carry `state` and assistant turns `action`.

Example:
  sage-dialog annotate dialogs.jsonl -o annotated.jsonl --annotator openai:qwen2.5-7b \\
      --backend-option base_url=http://127.0.0.1:8000/v1 --cache cache.sqlite
  sage-dialog annotate esconv.jsonl -o ann.jsonl --annotator hf:./my-model \\
      --labels assistant.motivation=esconv_strategies --labels user.emotion=empathetic_emotions
  sage-dialog annotate raw.json -o ann.jsonl --annotator oracle --sharegpt-out annotated.json \\
      --sac-out chained.json
  sage-dialog annotate dialogs.jsonl -o ann.jsonl --annotator mock:answers.yaml   # offline, scripted

Every option is a key of the config (AnnotateConfig): give them as flags, in a YAML file with
--config, or as --set KEY=VALUE; flags win over the file, --set over flags.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from sage_dialog.commands.config_flags import OUT, add_config_flags
    from sage_dialog.stages.annotate import AnnotateConfig

    add_config_flags(parser, AnnotateConfig, positional=["input"], flags={
        "output": OUT, "sharegpt_output": ["--sharegpt-out"], "sac_output": ["--sac-out"],
        "backend_options": ["--backend-option"],
    }, extra={"input_format": {"metavar": "FORMAT"}, "labels": {"metavar": "FIELD=SET"}})
    parser.add_argument("--ray", metavar="ADDRESS", help="annotate on Ray workers (chunks as units): a cluster "
                        "address (auto, HOST:6379) or 'local' (start Ray here); or engine: in --config")


def run(args: argparse.Namespace) -> int:
    from sage_dialog.commands.config_flags import config_from_args
    from sage_dialog.core import console
    from sage_dialog.stages import annotate
    from sage_dialog.stages.engine import EngineSettings

    cfg = config_from_args(annotate.AnnotateConfig, args)
    if getattr(args, "ray", None):
        cfg = cfg.model_copy(update={"engine": EngineSettings.from_flag(args.ray, cfg.engine)})
    console.stage_log(cfg.output.parent, "annotate", carry_over=True)  # the output may come from --config
    res = annotate.run(annotate.Settings.of(cfg), inputs=cfg.inputs(), out=cfg.output, files=cfg.files(),
                       progress=not args.quiet)
    if not args.quiet:
        print(res.text, file=sys.stderr)
        if "model_calls" in res.usage:
            speed = res.usage["ledger"].get("tokens_per_s")
            print(f"  model calls: {res.usage.get('model_calls', 0)}, cached: {res.usage.get('cached', 0)}"
                  + (f", {speed:g} tokens/s" if speed else ""), file=sys.stderr)
        print(f"wrote {cfg.output}, rejects {res.outputs['rejects']}, summary {res.outputs['summary']}",
              file=sys.stderr)
    return 0

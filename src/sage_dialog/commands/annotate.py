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
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="dialogs to annotate")
    parser.add_argument("-o", "--output", type=Path, required=True, help="annotated Dialog JSONL to write")
    parser.add_argument("--annotator", required=True, help='"oracle" or a backend spec (hf:PATH, vllm:PATH, openai:MODEL)')
    parser.add_argument("--input-format", default="auto", metavar="FORMAT",
                        help="auto (default: detected), seeds (one utterance per line), or a dialog format of "
                             "`sage-dialog convert --help`: dialogs, sharegpt, trl-sft, llamafactory-sft, "
                             "transcripts, empathetic, esconv, ...")
    parser.add_argument("--rejects", type=Path, help="rejects JSONL (default: OUTPUT.rejects.jsonl)")
    parser.add_argument("--summary", type=Path, help="summary JSON (default: OUTPUT.summary.json)")
    parser.add_argument("--sharegpt-out", type=Path, help="also write the original annotated ShareGPT JSON")
    parser.add_argument("--sac-out", type=Path,
                        help="also chain the result into SAC dialogs (Dialog .jsonl, or chained ShareGPT .json)")
    parser.add_argument("--labels", action="append", default=[], metavar="FIELD=SET",
                        help="closed label set for FIELD or ROLE.FIELD (motivation, emotion, topics; user, assistant): "
                             "a shipped set (esconv_strategies, empathetic_emotions) or a file, one label per line")
    parser.add_argument("--closed", choices=["map", "reject"], default="map",
                        help="closed sets: map near misses onto the set (default) or refuse them")
    parser.add_argument("--tidy", action="store_true",
                        help="let the annotator tidy text and add a bridging question (original kept in original_text)")
    parser.add_argument("--few-shot", type=Path, help="annotated Dialog JSONL used as few-shot examples")
    parser.add_argument("--prompt", type=Path, help="custom prompt template file")
    parser.add_argument("--max-attempts", type=int, default=3, help="requests per dialog, repairs included (default 3)")
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--json-prefill", action="store_true",
                        help="start every answer with its JSON head (small models otherwise continue the dialog)")
    parser.add_argument("--chunk-size", type=int, default=64, help="dialogs handed to the backend at once")
    parser.add_argument("--cache", help="response cache path (SQLite); re-runs take answers from it")
    parser.add_argument("--backend-option", action="append", default=[], metavar="KEY=VALUE",
                        help="backend constructor option, e.g. base_url=http://127.0.0.1:8000/v1")
    parser.add_argument("--limit", type=int, help="annotate only the first N dialogs")
    parser.add_argument("-q", "--quiet", action="store_true")


def _pairs(items: list[str], what: str) -> dict[str, str]:
    from sage_dialog.core.errors import UserError

    out = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k.strip() or not v.strip():
            raise UserError(f"{what} {item!r}: expected KEY=VALUE")
        out[k.strip()] = v.strip()
    return out


def run(args: argparse.Namespace) -> int:
    import yaml

    from sage_dialog.core.config import load_config
    from sage_dialog.stages import annotate

    options = {k: yaml.safe_load(v) for k, v in _pairs(args.backend_option, "--backend-option").items()}
    cfg = load_config(annotate.AnnotateConfig, base={
        "input": args.input, "output": args.output, "annotator": args.annotator, "input_format": args.input_format,
        "rejects": args.rejects, "summary": args.summary, "sharegpt_output": args.sharegpt_out,
        "sac_output": args.sac_out,
        "labels": _pairs(args.labels, "--labels"), "closed": args.closed, "tidy": args.tidy,
        "few_shot": args.few_shot, "prompt": args.prompt, "max_attempts": args.max_attempts,
        "temperature": args.temperature, "chunk_size": args.chunk_size, "cache": args.cache,
        "json_prefill": args.json_prefill,
        "backend_options": options, "limit": args.limit,
    })
    annotate.run(cfg, quiet=args.quiet)
    return 0

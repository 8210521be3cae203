"""Judge models pairwise on whole dialogs, with statistics (win rates with intervals, ranking).

For two or more models, plays dialogs from the same seeds against the same user simulator (or takes
existing dialog files / transcript folders), strips the tags, and lets every judge compare every pair
of dialogs per seed in both orders. Writes verdicts.jsonl, the original SAGE judge files with
combined_predictions.tsv / consensus_predictions.tsv, summary.json, report.md and a self-contained
report.html. A killed run resumes where it stopped when run again with the same output folder.

With --judgements DIR it analyses existing judge output files of the original SAGE scripts instead
(the TSVs go to -o, not into DIR).

Example:
  sage-dialog compare --model base=hf:models/base --model sage=hf:models/sac-dpo \\
      --seeds seeds.txt --user hf:models/base --judge openai:gpt-4o-mini --turns 4 -o runs/compare
  sage-dialog compare --dialogs m1=runs/m1/dialogs.jsonl --dialogs m2=runs/m2/transcripts \\
      --judge oracle -o runs/cmp
  sage-dialog compare --judgements old_sage/judge_out -o runs/old-analysis
  sage-dialog compare --config configs/compare.yaml --set turns=6
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sage_dialog.core.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    from sage_dialog.commands.config_flags import OUT, add_config_flags
    from sage_dialog.stages.compare.compare import CompareConfig

    add_config_flags(p, CompareConfig, flags={"out": OUT, "models": ["--model"], "judges": ["--judge"]},
                     extra={"out": {"type": str, "metavar": "DIR"}, "models": {"metavar": "NAME=SPEC"},
                            "dialogs": {"metavar": "NAME=PATH"}, "seeds": {"metavar": "FILE"},
                            "user_persona": {"metavar": "FILE"}, "judges": {"metavar": "SPEC"},
                            "user": {"metavar": "SPEC"}, "cache": {"metavar": "PATH"}})
    p.add_argument("--judgements", type=Path, metavar="DIR",
                   help="analyse a folder of original SAGE judge output files instead of running models")
    p.add_argument("--no-progress", action="store_true", help="no progress line (as -q)")


def run(args: argparse.Namespace) -> int:
    from sage_dialog.commands.config_flags import config_from_args
    from sage_dialog.core import console
    from sage_dialog.stages.compare.compare import CompareConfig, analyse_judgements

    if args.judgements is not None:
        out = getattr(args, "out", None)
        if out is None:
            raise UserError("--judgements needs -o OUT (the original wrote into the input folder; we do not)")
        from sage_dialog.core.io import check_paths

        check_paths(inputs=[args.judgements], folders=[Path(out)])
        rep = analyse_judgements(args.judgements, Path(out), n_boot=getattr(args, "bootstrap", 2000),
                                 seed=getattr(args, "seed", 0))
        _print(rep)
        return 0
    cfg = config_from_args(CompareConfig, args)
    console.stage_log(cfg.out, "compare", carry_over=True)  # the output may come from --config
    from sage_dialog.stages.compare import compare

    res = compare.run(compare.Settings.of(cfg), inputs=cfg.inputs(), out=Path(cfg.out),
                      progress=not (args.no_progress or args.quiet))
    _print(res.report)
    speed = res.usage.get("tokens_per_s")
    if speed:
        print(f"generation: {speed:g} tokens/s (usage in {Path(cfg.out) / 'manifest.json'})")
    return 0


def _print(rep: Any) -> None:
    for p in rep.pairs:
        rate = (f"win rate {100 * p.win_rate:.1f}% [{100 * p.ci_low:.1f}, {100 * p.ci_high:.1f}]" if p.parsed
                else "no parsed verdicts")
        print(f"{p.model_a} vs {p.model_b} ({p.unit}): win {p.wins} / tie {p.ties} / loss {p.losses} / "
              f"unparsed {p.unparsed}; {rate}; consensus A/B/M "
              f"{p.consensus.A}/{p.consensus.B}/{p.consensus.M}")
    if len(rep.models) > 2 and rep.ranking is None:
        print("ranking: none (no parsed verdicts)")
    print(f"report: {rep.html_path} and {rep.markdown_path}")

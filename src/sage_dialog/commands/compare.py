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


def _pairs(values: list[str] | None, option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in values or []:
        name, sep, target = v.partition("=")
        if not sep or not name.strip() or not target.strip():
            raise UserError(f"{option} {v!r}: expected NAME=VALUE, e.g. {option} base=hf:models/base")
        if name in out:
            raise UserError(f"{option}: the name {name!r} is given twice")
        out[name.strip()] = target.strip()
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--out", type=Path, help="output folder (default from config, else compare-out)")
    p.add_argument("--config", type=Path, help="YAML config (keys of CompareConfig; see docs/comparison.md)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--model", action="append", metavar="NAME=SPEC", help="a model to play dialogs with (repeat)")
    p.add_argument("--dialogs", action="append", metavar="NAME=PATH",
                   help="existing dialogs of a model: a dialogs JSONL or a folder of .txt transcripts (repeat)")
    p.add_argument("--seeds", help="seed file: one opening user utterance per line, .jsonl, or ED .csv")
    p.add_argument("--max-seeds", type=int, help="use only the first N seeds")
    p.add_argument("--user", help="user simulator: backend spec or 'oracle'")
    p.add_argument("--user-persona", help="user persona prompt file")
    p.add_argument("--judge", action="append", help="judge: backend spec or 'oracle' (repeat for several judges)")
    p.add_argument("--judge-mode", choices=["generate", "score"],
                   help="generate: parse 'Dialog X is better' / 'Tie'; score: most likely option")
    p.add_argument("--turns", type=int, help="assistant turns per dialog")
    p.add_argument("--per-turn", action="store_true", help="also judge every model's reply to the same user turns")
    p.add_argument("--bootstrap", type=int, help="bootstrap resamples (default 2000)")
    p.add_argument("--seed", type=int, help="random seed for sampling and the bootstrap")
    p.add_argument("--cache", help="SQLite response cache shared by all model calls")
    p.add_argument("--title", help="report title")
    p.add_argument("--judgements", type=Path, metavar="DIR",
                   help="analyse a folder of original SAGE judge output files instead of running models")
    p.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    from sage_dialog.core.config import load_config
    from sage_dialog.stages.compare.compare import CompareConfig, analyse_judgements

    if args.judgements is not None:
        if args.out is None:
            raise UserError("--judgements needs -o OUT (the original wrote into the input folder; we do not)")
        from sage_dialog.core.io import check_paths

        check_paths(inputs=[args.judgements], folders=[args.out])
        rep = analyse_judgements(args.judgements, args.out, n_boot=args.bootstrap or 2000, seed=args.seed or 0)
        _print(rep)
        return 0
    base: dict[str, Any] = {}
    cli: dict[str, Any] = {
        "out": str(args.out) if args.out else None, "seeds": args.seeds, "max_seeds": args.max_seeds,
        "user": args.user, "user_persona": args.user_persona, "judge_mode": args.judge_mode, "turns": args.turns,
        "bootstrap": args.bootstrap, "seed": args.seed, "cache": args.cache, "title": args.title,
        "models": _pairs(args.model, "--model") or None, "dialogs": _pairs(args.dialogs, "--dialogs") or None,
        "judges": args.judge, "per_turn": True if args.per_turn else None,
    }
    if args.config is None:
        base = {k: v for k, v in cli.items() if v is not None}
        cfg = load_config(CompareConfig, None, args.set, base=base)
    else:
        from sage_dialog.core.config import read_yaml

        base = read_yaml(args.config)
        base.update({k: v for k, v in cli.items() if v is not None})
        cfg = load_config(CompareConfig, None, args.set, base=base)
    from sage_dialog.stages.compare.compare import run as run_compare

    rep = run_compare(cfg, progress=not args.no_progress)
    _print(rep)
    return 0


def _print(rep: Any) -> None:
    for p in rep.pairs:
        print(f"{p.model_a} vs {p.model_b} ({p.unit}): win {p.wins} / tie {p.ties} / loss {p.losses} / "
              f"unparsed {p.unparsed}; win rate {100 * p.win_rate:.1f}% "
              f"[{100 * p.ci_low:.1f}, {100 * p.ci_high:.1f}]; consensus A/B/M "
              f"{p.consensus.A}/{p.consensus.B}/{p.consensus.M}")
    print(f"report: {rep.html_path} and {rep.markdown_path}")

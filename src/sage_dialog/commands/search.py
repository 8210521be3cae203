"""Self-play dialog tree search with an LLM judge.

From each seed utterance the assistant samples N candidate replies per turn, a judge keeps the best,
a user simulator answers it; the whole tree per seed is written as JSONL, with the best paths, the
original SAGE transcripts and a manifest. Running the same command again on the same output folder
resumes a killed search without repeating finished model calls.

Seeds: a text file (one utterance per line, EmpatheticDialogues ``_comma_`` escapes allowed), JSONL
(strings, objects with ``text``/``seed``/``prompt``, or dialogs: their first user turn) or an
EmpatheticDialogues CSV (first utterance of each conversation).

Example:
  sage-dialog search seeds.txt --assistant hf:models/sac-sft -o runs/search \\
      --turns 8 --candidates 4 --judge-mode logprob
  sage-dialog search seeds.txt --assistant hf:models/sac-sft --user oracle --judge oracle \\
      --strategy beam --beam-width 2 -o runs/beam
  sage-dialog search seeds.txt --assistant hf:models/sac-sft --user oracle --judge oracle \\
      --strategy mcts --actions esconv_strategies --k-actions 4 --simulations 8 -o runs/mcts
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sage_dialog.core.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    # defaults live in the config (sage_dialog.stages.search.stage.SearchRunConfig), shared with
    # `run` and the demo; a flag left out here takes the config's default
    p.add_argument("seeds", type=Path, help="seed file: .txt/.tsv lines, .jsonl, or EmpatheticDialogues .csv")
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder (re-run to resume)")
    p.add_argument("--assistant", required=True, help="assistant backend spec, e.g. hf:PATH, vllm:PATH, openai:MODEL")
    p.add_argument("--user", help="user-simulator backend spec or 'oracle' (default: the assistant's model)")
    p.add_argument("--judge", help="selector judge backend spec or 'oracle' (default: the assistant's model)")
    p.add_argument("--judge-mode", choices=["generate", "logprob"],
                   help="generate (default): parse 'Response X is better' (the original); logprob: score the options")
    p.add_argument("--judge-orders", type=int, metavar="K",
                   help="judge each decision in K shown orders and combine them (default 1; K times the judge calls)")
    p.add_argument("--criteria",
                   help="judge criteria: companion (default), humor, empathy, or a template file with {history} {candidates}")
    p.add_argument("--none-policy", choices=["resample", "keep_best", "stop"],
                   help="what to do when the judge says no candidate is good (default resample)")
    p.add_argument("--strategy", choices=["best_of_n", "beam", "lookahead", "latent", "mcts"],
                   help="default best_of_n; latent / mcts branch on SAC actions instead of free samples (docs/search.md)")
    p.add_argument("--actions", help="latent/mcts: closed action set (label-set name or file, JSON list of tag "
                   "objects, or 'sandbox'); default: open vocabulary (sampled action blocks)")
    p.add_argument("--k-actions", type=int, help="latent/mcts: actions proposed per decision (default 4)")
    p.add_argument("--replies-per-action", type=int, help="latent: replies sampled per action (default 1)")
    p.add_argument("--simulations", type=int, help="mcts: replies realised per decision (default 8)")
    p.add_argument("--c-puct", type=float, help="mcts: exploration weight (default 1.5)")
    p.add_argument("--latent-value", choices=["judge", "rollout"],
                   help="latent/mcts: judge the replies (default), or --lookahead-depth turns rolled forward")
    p.add_argument("--prior-temperature", type=float, help="latent/mcts: prior = softmax(logprob/T) (default 1.0)")
    p.add_argument("--epsilon", type=float, help="latent/mcts: uniform exploration mixed into priors (default 0)")
    p.add_argument("--dirichlet-alpha", type=float, help="latent/mcts: Dirichlet noise mixed into priors")
    p.add_argument("--turns", type=int, help="assistant turns per dialog (default 8)")
    p.add_argument("--candidates", "-n", type=int, help="candidates per decision (default 4)")
    p.add_argument("--beam-width", type=int, help="dialogs kept per seed with --strategy beam (default 2)")
    p.add_argument("--lookahead-depth", type=int, help="turns rolled forward with --strategy lookahead (default 1)")
    p.add_argument("--max-resamples", type=int, help="redraws when the judge finds none good (default 2)")
    p.add_argument("--temperature", type=float, help="default 0.95")
    p.add_argument("--top-p", type=float, help="default 1.0")
    p.add_argument("--top-k", type=int, help="default 50")
    p.add_argument("--repetition-penalty", type=float, help="default 1.1")
    p.add_argument("--max-tokens", type=int, help="assistant reply length limit (default 128)")
    p.add_argument("--user-max-tokens", type=int, help="user reply length limit (default 64)")
    p.add_argument("--user-persona", help="user persona file (default: the packaged persona_user)")
    p.add_argument("--assistant-persona",
                   help="assistant persona: a file, persona_assistant (default; caring, humorous), "
                   "persona_assistant_humor, or none")
    p.add_argument("--humor", action="store_true", default=None,
                   help="humor mode: humorous persona and humor judge criteria")
    p.add_argument("--budget-requests", type=int, help="model requests per seed")
    p.add_argument("--budget-tokens", type=int, help="assistant tokens per seed")
    p.add_argument("--limit", type=int, help="use only the first N seeds")
    p.add_argument("--seed", type=int, help="random seed (sampling seeds derive from it; default 0)")
    p.add_argument("--cache", help="SQLite response cache shared by all model calls (default: none)")
    p.add_argument("--batch-size", type=int, help="rows per forward batch for hf: backends")
    p.add_argument("--ray", metavar="ADDRESS", help="search the seeds on Ray workers: a cluster address (auto, "
                   "HOST:6379) or 'local' (start Ray here); the output folder must be on storage all nodes see")
    p.add_argument("--ray-workers", type=int, metavar="N", help="Ray workers (default: one per CPU of the cluster)")
    p.add_argument("--no-progress", action="store_true")


_TOP = ("user", "judge", "judge_mode", "judge_orders", "criteria", "none_policy", "humor", "assistant_persona", "user_persona",
        "user_max_tokens", "cache")
_STRATEGY = ("strategy", "turns", "candidates", "beam_width", "lookahead_depth", "max_resamples", "budget_requests",
             "budget_tokens", "seed")
_SAMPLING = ("temperature", "top_p", "top_k", "repetition_penalty", "max_tokens")
# flag -> field of the strategy's `latent` section (LatentConfig)
_LATENT = {"actions": "action_set", "k_actions": "k", "replies_per_action": "replies", "simulations": "simulations",
           "c_puct": "c_puct", "latent_value": "value", "prior_temperature": "prior_temperature",
           "epsilon": "epsilon", "dirichlet_alpha": "dirichlet_alpha"}


def config_from_args(args: argparse.Namespace) -> object:
    """The :class:`SearchRunConfig` the flags describe (flags left out take the config's defaults)."""
    from pydantic import ValidationError

    from sage_dialog.core.io import format_validation_error
    from sage_dialog.stages.search.stage import SearchRunConfig

    given = lambda names: {k: getattr(args, k) for k in names if getattr(args, k) is not None}  # noqa: E731
    data: dict = {"seeds": args.seeds, "out": args.out, "assistant": args.assistant, "max_seeds": args.limit,
                  **given(_TOP), "config": {**given(_STRATEGY), "sampling": given(_SAMPLING),
                                            "latent": {_LATENT[k]: v for k, v in given(_LATENT).items()}}}
    if args.ray:
        data["engine"] = {"kind": "ray", "address": args.ray, "workers": args.ray_workers}
    if args.batch_size and args.assistant.startswith("hf:"):
        data["backend_options"] = {"batch_size": args.batch_size}
    try:
        return SearchRunConfig.model_validate(data)
    except ValidationError as e:  # range errors -> one line naming the option
        raise UserError(format_validation_error("search options", None, e)) from None


def run(args: argparse.Namespace) -> int:
    from sage_dialog.core.io import check_paths
    from sage_dialog.stages.search.stage import SearchRunConfig
    from sage_dialog.stages.search.stage import run as run_search

    cfg = config_from_args(args)
    assert isinstance(cfg, SearchRunConfig)
    # every input and the output folder are checked before any model loads
    check_paths(inputs=[args.seeds, args.user_persona], folders=[args.out])
    res = run_search(cfg, progress=not args.no_progress)
    speed = res.usage.get("tokens_per_s")
    print(f"searched {res.seeds} seeds ({res.nodes} nodes; judge outcomes {res.outcomes}"
          + (f"; {speed:g} assistant tokens/s" if speed else "") + f") -> {res.trees}, {res.best}")
    return 0

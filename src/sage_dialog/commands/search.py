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
import json
from pathlib import Path

from sage_dialog.core.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("seeds", type=Path, help="seed file: .txt/.tsv lines, .jsonl, or EmpatheticDialogues .csv")
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder (re-run to resume)")
    p.add_argument("--assistant", required=True, help="assistant backend spec, e.g. hf:PATH, vllm:PATH, openai:MODEL")
    p.add_argument("--user", help="user-simulator backend spec or 'oracle' (default: the assistant's model)")
    p.add_argument("--judge", help="selector judge backend spec or 'oracle' (default: the assistant's model)")
    p.add_argument("--judge-mode", choices=["generate", "logprob"], default="generate",
                   help="generate: parse 'Response X is better' (the original); logprob: score the options")
    p.add_argument("--criteria", default="companion",
                   help="judge criteria: companion, humor, empathy, or a template file with {history} {candidates}")
    p.add_argument("--none-policy", choices=["resample", "keep_best", "stop"], default="resample",
                   help="what to do when the judge says no candidate is good")
    p.add_argument("--strategy", choices=["best_of_n", "beam", "lookahead", "latent", "mcts"], default="best_of_n",
                   help="latent / mcts branch on SAC actions instead of free samples (docs/search.md)")
    p.add_argument("--actions", help="latent/mcts: closed action set (label-set name or file, JSON list of tag "
                   "objects, or 'sandbox'); default: open vocabulary (sampled action blocks)")
    p.add_argument("--k-actions", type=int, default=4, help="latent/mcts: actions proposed per decision")
    p.add_argument("--replies-per-action", type=int, default=1, help="latent: replies sampled per action")
    p.add_argument("--simulations", type=int, default=8, help="mcts: replies realised per decision")
    p.add_argument("--c-puct", type=float, default=1.5, help="mcts: exploration weight")
    p.add_argument("--latent-value", choices=["judge", "rollout"], default="judge",
                   help="latent/mcts: judge the replies, or --lookahead-depth turns rolled forward")
    p.add_argument("--prior-temperature", type=float, default=1.0, help="latent/mcts: prior = softmax(logprob/T)")
    p.add_argument("--epsilon", type=float, default=0.0, help="latent/mcts: uniform exploration mixed into priors")
    p.add_argument("--dirichlet-alpha", type=float, help="latent/mcts: Dirichlet noise mixed into priors")
    p.add_argument("--turns", type=int, default=8, help="assistant turns per dialog (default 8)")
    p.add_argument("--candidates", "-n", type=int, default=4, help="candidates per decision (default 4)")
    p.add_argument("--beam-width", type=int, default=2, help="dialogs kept per seed with --strategy beam")
    p.add_argument("--lookahead-depth", type=int, default=1, help="turns rolled forward with --strategy lookahead")
    p.add_argument("--max-resamples", type=int, default=2, help="redraws when the judge finds none good")
    p.add_argument("--temperature", type=float, default=0.95)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=50)
    p.add_argument("--repetition-penalty", type=float, default=1.1)
    p.add_argument("--max-tokens", type=int, default=128, help="assistant reply length limit")
    p.add_argument("--user-max-tokens", type=int, default=64)
    p.add_argument("--user-persona", help="user persona file (default: the packaged persona_user)")
    p.add_argument("--assistant-persona", default="persona_assistant",
                   help="assistant persona: a file, persona_assistant (caring, humorous), persona_assistant_humor, or none")
    p.add_argument("--humor", action="store_true", help="humor mode: humorous persona and humor judge criteria")
    p.add_argument("--budget-requests", type=int, help="model requests per seed")
    p.add_argument("--budget-tokens", type=int, help="assistant tokens per seed")
    p.add_argument("--limit", type=int, help="use only the first N seeds")
    p.add_argument("--seed", type=int, default=0, help="random seed (sampling seeds derive from it)")
    p.add_argument("--cache", help="SQLite response cache shared by all model calls")
    p.add_argument("--batch-size", type=int, help="rows per forward batch for hf: backends")
    p.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    from sage_dialog.backends.base import SamplingParams
    from sage_dialog.core.prompts import HUMOR_ASSISTANT_PERSONA, load_prompt
    from sage_dialog.roles.factory import BackendPool, make_selector, make_user
    from sage_dialog.stages.search.actions import LatentConfig
    from sage_dialog.stages.search.search import SamplingConfig, SearchConfig, run_search

    for name in ("turns", "candidates", "beam_width", "lookahead_depth", "max_tokens"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    from sage_dialog.core.io import check_paths
    from sage_dialog.stages.search.seeds import read_seed_file

    # every input and the output folder are checked before any model loads
    check_paths(inputs=[args.seeds, args.user_persona], folders=[args.out])
    seeds = read_seed_file(args.seeds)
    if args.limit is not None:
        seeds = seeds[: args.limit]
    persona_name = HUMOR_ASSISTANT_PERSONA if args.humor and args.assistant_persona == "persona_assistant" \
        else args.assistant_persona
    system_prompt = None if persona_name.lower() == "none" else load_prompt(persona_name)
    user_persona = load_prompt(args.user_persona) if args.user_persona else None
    criteria = "humor" if args.humor and args.criteria == "companion" else args.criteria
    try:
        cfg = SearchConfig(
            strategy=args.strategy, turns=args.turns, candidates=args.candidates, beam_width=args.beam_width,
            lookahead_depth=args.lookahead_depth, max_resamples=args.max_resamples, system_prompt=system_prompt,
            sampling=SamplingConfig(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                                    repetition_penalty=args.repetition_penalty, max_tokens=args.max_tokens),
            budget_requests=args.budget_requests, budget_tokens=args.budget_tokens, seed=args.seed,
            latent=LatentConfig(action_set=args.actions, k=args.k_actions, replies=args.replies_per_action,
                                simulations=args.simulations, c_puct=args.c_puct, value=args.latent_value,
                                prior_temperature=args.prior_temperature, epsilon=args.epsilon,
                                dirichlet_alpha=args.dirichlet_alpha))
    except Exception as e:  # pydantic range errors -> one line each
        raise UserError(f"bad search option: {e}") from None

    pool = BackendPool(args.cache, {"batch_size": args.batch_size} if args.batch_size else None)
    assistant = pool.get(args.assistant)
    user_sampling = SamplingParams(temperature=args.temperature, top_k=args.top_k,
                                   repetition_penalty=args.repetition_penalty, max_tokens=args.user_max_tokens)
    # one model plays the user and the judge too unless told otherwise (loaded once by the pool)
    user = make_user(args.user or args.assistant, pool, persona=user_persona, seed=args.seed,
                     sampling=user_sampling)
    selector = make_selector(args.judge or args.assistant, pool, criteria=criteria, mode=args.judge_mode,
                             none_policy=args.none_policy)
    try:
        out = run_search(assistant, user, selector, seeds, cfg, args.out, progress=not args.no_progress)
    finally:
        import asyncio

        asyncio.run(pool.aclose())
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    summary, speed = manifest["summary"], manifest["usage"].get("tokens_per_s")
    print(f"searched {summary['seeds']} seeds ({summary['nodes']} nodes; judge outcomes {summary['outcomes']}"
          + (f"; {speed:g} assistant tokens/s" if speed else "") + f") -> {out}/trees, {out}/best.jsonl")
    return 0

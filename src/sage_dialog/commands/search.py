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

from sage_dialog.core.errors import UserError

# the alias map: today's names of fields whose generated flag would read differently
FLAGS = {
    "out": ["-o", "--out"],
    "max_seeds": ["--limit"],
    "backend_options": ["--backend-option"],
    "config.candidates": ["--candidates", "-n"],
    "config.latent.action_set": ["--actions"],
    "config.latent.k": ["--k-actions"],
    "config.latent.replies": ["--replies-per-action"],
    "config.latent.value": ["--latent-value"],
    "config.latent.batch": ["--mcts-batch"],
}
# the strategy, its sampling and its latent options are named without their section
FLATTEN = ["config", "config.sampling", "config.latent"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    from sage_dialog.commands.config_flags import add_config_flags
    from sage_dialog.stages.search.stage import SearchRunConfig

    # every setting of SearchRunConfig (shared with `run` and the demo) is a flag; a flag left out
    # takes the config's default
    add_config_flags(p, SearchRunConfig, positional=["seeds"], flags=FLAGS, flatten=FLATTEN, extra={
        "seeds": {"help": "seed file: .txt/.tsv lines, .jsonl, or EmpatheticDialogues .csv"},
        "out": {"metavar": "DIR"}, "max_seeds": {"metavar": "N"}, "judge_orders": {"metavar": "K"},
        "assistant": {"metavar": "SPEC"}, "user": {"metavar": "SPEC"}, "judge": {"metavar": "SPEC"},
        "cache": {"metavar": "PATH"}, "user_persona": {"metavar": "FILE"}, "assistant_persona": {"metavar": "FILE"},
        "config.latent.action_set": {"type": str, "metavar": "SET",
                                     "help": "latent/mcts: closed action set (label-set name or file, JSON list of "
                                             "tag objects, or 'sandbox'); default: open vocabulary (sampled action "
                                             "blocks)"},
        "config.strategy": {"help": "latent / mcts branch on SAC actions instead of free samples (docs/search.md)"},
        "config.sampling.temperature": {"help": "assistant sampling temperature"},
        "config.sampling.top_p": {"help": "assistant nucleus sampling"},
        "config.sampling.top_k": {"help": "assistant top-k sampling (0: off)"},
        "config.sampling.repetition_penalty": {"help": "assistant repetition penalty"},
        "config.sampling.max_tokens": {"help": "assistant reply length limit"},
        "config.seed": {"help": "random seed (sampling seeds derive from it)"},
        "config.latent.dirichlet_weight": {"help": "latent/mcts: share of the Dirichlet noise in the prior"},
    })
    p.add_argument("--batch-size", type=int, help="rows per forward batch for hf: backends")
    p.add_argument("--ray", metavar="ADDRESS", help="search the seeds on Ray workers: a cluster address (auto, "
                   "HOST:6379) or 'local' (start Ray here); the output folder must be on storage all nodes see")
    p.add_argument("--ray-workers", type=int, metavar="N", help="Ray workers (default: one per CPU of the cluster)")
    p.add_argument("--no-progress", action="store_true", help="no progress line (as -q)")


def config_from_args(args: argparse.Namespace) -> object:
    """The :class:`SearchRunConfig` the flags, ``--config`` and ``--set`` describe (defaults: the config's)."""
    from pydantic import ValidationError

    from sage_dialog.commands import config_flags
    from sage_dialog.core.io import format_validation_error
    from sage_dialog.stages.engine import EngineSettings
    from sage_dialog.stages.search.stage import SearchRunConfig

    cfg = config_flags.config_from_args(SearchRunConfig, args)
    assert isinstance(cfg, SearchRunConfig)
    update: dict = {}
    if getattr(args, "ray", None):
        try:
            update["engine"] = EngineSettings.model_validate(
                {**cfg.engine.model_dump(), "kind": "ray", "address": args.ray,
                 **({"workers": args.ray_workers} if args.ray_workers is not None else {})})
        except ValidationError as e:  # --ray-workers 0
            raise UserError(format_validation_error("--ray", None, e)) from None
    if getattr(args, "batch_size", None) and (cfg.assistant or "").startswith("hf:"):
        update["backend_options"] = {**cfg.backend_options, "batch_size": args.batch_size}
    return cfg.model_copy(update=update) if update else cfg


def run(args: argparse.Namespace) -> int:
    from sage_dialog.core.io import check_paths
    from sage_dialog.stages.search.stage import SearchRunConfig
    from sage_dialog.stages.search.stage import run as run_search

    cfg = config_from_args(args)
    assert isinstance(cfg, SearchRunConfig)
    # every input and the output folder are checked before any model loads
    check_paths(inputs=[cfg.seeds, cfg.user_persona], folders=[cfg.out])
    res = run_search(cfg, progress=not args.no_progress)
    speed = res.usage.get("tokens_per_s")
    print(f"searched {res.seeds} seeds ({res.nodes} nodes; judge outcomes {res.outcomes}"
          + (f"; {speed:g} assistant tokens/s" if speed else "") + f") -> {res.trees}, {res.best}")
    return 0

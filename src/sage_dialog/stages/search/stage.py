"""The search stage as one config: ``run(SearchRunConfig) -> SearchResult``.

``sage-dialog search``, the SAGE loop (``sage-dialog run``) and the sandbox demo all build their
search from :class:`SearchRunConfig`, so the three agree on every default:

* ``user`` and ``judge`` default to ``"assistant"``: the model being searched plays the user (roles
  flipped) and judges too, as in the original; ``"oracle"`` is the sandbox world's oracle, anything
  else a backend spec.
* ``assistant_persona`` defaults to ``persona_assistant`` (the original's caring, humorous persona),
  ``none`` for no system prompt (models trained without one, such as the sandbox's tiny model).
* ``humor: true`` switches to the humorous persona and the humor judge criteria where those are
  left at their defaults.
* ``user_max_tokens`` limits the user's replies; the user otherwise samples like the assistant.
* ``cache`` (a SQLite file) is off by default for the command; the loop sets its run's shared cache.

The strategy itself (best-of-N, beam, lookahead, sampling, budgets) is the nested ``config``
(:class:`sage_dialog.stages.search.config.SearchConfig`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sage_dialog.core.errors import UserError
from sage_dialog.stages.engine import EngineSettings, engine_field
from sage_dialog.stages.search.config import SearchConfig
from sage_dialog.stages.search.setup import backend_pool, build_roles

ASSISTANT = "assistant"  # a role spec naming the model being searched


class SearchRunConfig(BaseModel):
    """Everything one search needs: inputs, outputs, roles, personas, cache and the strategy."""

    model_config = ConfigDict(extra="forbid")
    seeds: Path | None = Field(None, description="seed utterances: .txt/.tsv lines, .jsonl or an EmpatheticDialogues .csv")
    max_seeds: int | None = Field(None, ge=1, description="use only the first N seeds")
    out: Path | None = Field(None, description="output folder (re-run to resume)")
    assistant: str | None = Field(None, description="assistant backend spec, e.g. hf:PATH, vllm:PATH, openai:MODEL")
    user: str = Field(ASSISTANT, description='user simulator: "assistant" (the same model, roles flipped), '
                      '"oracle" or a backend spec')
    judge: str = Field(ASSISTANT, description='selector judge: "assistant", "oracle" or a backend spec')
    judge_mode: Literal["generate", "logprob"] = Field(
        "generate", description="generate: parse 'Response X is better' (the original); logprob: score the options")
    judge_orders: int = Field(1, ge=1, description="judge each decision in K shown orders and combine them "
                              "(K times the judge calls)")
    criteria: str = Field("companion", description="judge criteria: companion, humor, empathy, or a template "
                          "file with {history} {candidates}")
    none_policy: Literal["resample", "keep_best", "stop"] = Field(
        "resample", description="what to do when the judge says no candidate is good")
    humor: bool = Field(False, description="humor mode: humorous persona and humor judge criteria")
    assistant_persona: str = Field("persona_assistant", description="assistant persona: a file, persona_assistant, "
                                   "persona_assistant_humor, or none")
    user_persona: str | None = Field(None, description="user persona file (default: the packaged persona_user)")
    user_max_tokens: int = Field(64, ge=1, description="user reply length limit")
    cache: str | None = Field(None, description="SQLite response cache shared by all model calls")
    backend_options: dict[str, Any] = Field(default_factory=dict,
                                            description="options of backends of the assistant's provider")
    config: SearchConfig = Field(default_factory=SearchConfig, description="the search strategy and sampling")
    engine: EngineSettings = engine_field()

    def persona_name(self) -> str:
        if self.humor and self.assistant_persona == "persona_assistant":
            from sage_dialog.core.prompts import HUMOR_ASSISTANT_PERSONA

            return HUMOR_ASSISTANT_PERSONA
        return self.assistant_persona

    def judge_criteria(self) -> str:
        return "humor" if self.humor and self.criteria == "companion" else self.criteria

    def strategy(self) -> SearchConfig:
        """The strategy config with the persona resolved into its system prompt."""
        from sage_dialog.core.prompts import load_prompt

        if self.config.system_prompt is not None:
            return self.config
        name = self.persona_name()
        prompt = None if name.lower() == "none" else load_prompt(name)
        return self.config.model_copy(update={"system_prompt": prompt})


@dataclass
class SearchResult:
    """What a finished search wrote and used."""

    out: Path
    trees: Path
    best: Path
    seeds: int
    nodes: int
    outcomes: dict[str, int] = field(default_factory=dict)
    usage: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)  # the judge's decisions (search.decision_counts)

    def summary(self) -> dict[str, Any]:
        return {"seeds": self.seeds, "nodes": self.nodes, "outcomes": self.outcomes}


def run(cfg: SearchRunConfig, *, progress: bool = False) -> SearchResult:
    """Search from the config's seeds with its roles into ``cfg.out`` (resumable); see the module doc."""
    from sage_dialog.core import io
    from sage_dialog.stages.search.search import decision_counts, run_search
    from sage_dialog.stages.search.seeds import read_seed_file

    if cfg.seeds is None or cfg.out is None or cfg.assistant is None:
        missing = [k for k in ("seeds", "out", "assistant") if getattr(cfg, k) is None]
        raise UserError(f"search: no {', '.join(missing)} given")
    seeds = read_seed_file(cfg.seeds)[: cfg.max_seeds]
    strategy = cfg.strategy()  # persona files are read before any model loads
    if cfg.user_persona:
        from sage_dialog.core.prompts import load_prompt

        load_prompt(cfg.user_persona)
    if cfg.engine.kind == "ray":  # seeds are the units, each searched on a Ray worker
        from sage_dialog.stages.search.remote import run_remote

        out = run_remote(cfg, seeds, progress=progress)
    else:
        pool = backend_pool(cfg)
        try:
            assistant, user, selector = build_roles(cfg, pool, strategy)
            out = run_search(assistant, user, selector, seeds, strategy, cfg.out, progress=progress)
        finally:
            asyncio.run(pool.aclose())
    manifest = io.read_json(out / "manifest.json")
    summary = manifest.get("summary", {})
    return SearchResult(out=out, trees=out / "trees", best=out / "best.jsonl", seeds=summary.get("seeds", len(seeds)),
                        nodes=summary.get("nodes", 0), outcomes=summary.get("outcomes", {}),
                        usage=manifest.get("usage", {}), counts=decision_counts(manifest))

"""What a search does: :class:`SearchConfig` (``config`` of a search run, ``search.config`` in run configs)
and the options of the latent strategies, :class:`LatentConfig` (``config.latent``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sage_dialog.core.schema import Tags
from sage_dialog.roles.sampling import SamplingConfig

Strategy = Literal["best_of_n", "beam", "lookahead", "latent", "mcts"]
LATENT_STRATEGIES = ("latent", "mcts")  # branch on the SAC action (stages/search/actions.py)


class LatentConfig(BaseModel):
    """Options of the ``latent`` and ``mcts`` strategies (``search.latent`` in configs)."""

    model_config = ConfigDict(extra="forbid")
    action_set: str | list[Tags] | None = Field(
        default=None, description="closed action set: a label-set name or file (labels go to a_motivation), a "
        "JSON file with a list of tag objects, 'sandbox', or a list of tag objects; null: open vocabulary")
    k: int = Field(default=4, ge=1, description="actions proposed per decision")
    replies: int = Field(default=1, ge=1, description="replies sampled per action (latent)")
    prior_temperature: float = Field(default=1.0, gt=0, description="prior = softmax(logprob / T)")
    epsilon: float = Field(default=0.0, ge=0, le=1, description="mix the uniform distribution into the prior")
    dirichlet_alpha: float | None = Field(default=None, gt=0, description="mix Dirichlet noise into the prior")
    dirichlet_weight: float = Field(default=0.25, ge=0, le=1)
    state_temperature: float | None = Field(
        default=0.0, ge=0, description="temperature of the state block (0: the model's most likely reading of the "
        "user; null: the search's sampling temperature)")
    open_samples: int = Field(default=8, ge=1, description="action blocks sampled per decision (open vocabulary)")
    value: Literal["judge", "rollout"] = Field(
        default="judge", description="judge the replies themselves, or lookahead_depth turns rolled forward")
    simulations: int = Field(default=8, ge=1, description="replies realised per decision (mcts)")
    batch: int | None = Field(default=None, ge=1, description="replies per mcts round (default: k)")
    c_puct: float = Field(default=1.5, ge=0, description="exploration weight of PUCT (mcts)")


class SearchConfig(BaseModel):
    """What a search does (roles are passed as objects, see :func:`.search.run_search`)."""

    model_config = ConfigDict(extra="forbid")
    strategy: Strategy = "best_of_n"
    turns: int = Field(default=8, ge=1, description="assistant turns per dialog")
    candidates: int = Field(default=4, ge=1, description="assistant replies sampled per decision")
    beam_width: int = Field(default=2, ge=1, description="dialogs kept per seed (beam)")
    lookahead_depth: int = Field(default=1, ge=1, description="turns rolled forward per candidate (lookahead)")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    system_prompt: str | None = Field(default=None, description="assistant persona (system prompt)")
    max_resamples: int = Field(default=2, ge=0, description="new candidate draws when the judge finds none good")
    budget_requests: int | None = Field(default=None, ge=1, description="model requests per seed")
    budget_tokens: int | None = Field(default=None, ge=1, description="assistant tokens (prompt + completion) per seed")
    seed: int = 0
    latent: LatentConfig = Field(default_factory=LatentConfig, description="options of latent and mcts")

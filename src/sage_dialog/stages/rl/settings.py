"""Settings of the ``rl`` stage (``sage-dialog train rl CONFIG`` and a run config's ``rl:`` section)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from sage_dialog.stages.base import StageSettings
from sage_dialog.train.config import AdapterSection, ModelSection


class RolloutSettings(StageSettings):
    """How the policy plays: whole dialogs of ``turns`` replies against the user simulator."""

    turns: int = Field(default=3, ge=1, le=32, description="assistant replies per dialog")
    user: str = Field(default="oracle", description="user simulator: 'oracle', 'oracle:VARIANT' (a world's rules, e.g. "
                      "oracle:long_horizon) or a backend spec (the model plays the user, roles flipped)")
    user_persona: str | None = Field(default=None, description="persona prompt text of an LLM user simulator")
    system_prompt: str | None = Field(default=None, description="system prompt of the policy (none: as it was trained)")
    temperature: float = Field(default=1.0, gt=0, description="sampling temperature of the policy (also used for its "
                               "log-probabilities in the loss, as TRL does)")
    top_k: int = Field(default=0, ge=0, description="0: no top-k cut")
    max_tokens: int = Field(default=64, ge=1, le=4096, description="new tokens per reply")


class RewardSettings(StageSettings):
    """Where rewards come from. ``ground_truth``: a world's reward oracle (``oracle`` or ``oracle:VARIANT``),
    spread over the turns; ``judge``: a pairwise judge (a backend spec or an oracle) compares each
    rollout with the starting policy's dialog from the same seed, in both orders (win 1, tie 0.5,
    loss 0), on the last turn."""

    source: Literal["ground_truth", "judge"] = "ground_truth"
    oracle: str = Field(default="oracle", description="the reward oracle of source ground_truth")
    judge: str = Field(default="oracle", description="the pairwise judge of source judge")
    gamma: float = Field(default=1.0, ge=0, le=1, description="discount of later turns' rewards in a turn's return")


class RLTrainSettings(StageSettings):
    """Optimisation (TRL GRPOTrainer under the hood)."""

    steps: int = Field(default=40, ge=1, description="optimizer steps; each plays prompts_per_step x group_size dialogs")
    prompts_per_step: int = Field(default=4, ge=1, description="seed openings per step")
    group_size: int = Field(default=4, ge=2, description="dialogs played from each opening (the GRPO group)")
    learning_rate: float = Field(default=1e-4, gt=0)
    beta: float = Field(default=0.02, ge=0, description="KL penalty to the starting policy (0: no reference model)")
    max_grad_norm: float = 1.0
    warmup_ratio: float = Field(default=0.0, ge=0, le=1)
    lr_scheduler: str = "constant"
    seed: int = 0
    logging_steps: int = Field(default=1, ge=1)
    save_steps: int = Field(default=10, ge=1, description="checkpoint every N steps (resume picks up the last one)")
    save_total_limit: int | None = 2
    resume: bool | str = Field(default=False, description="true: resume from the last checkpoint in the output folder")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16", "fast"] = "auto"
    gradient_checkpointing: bool | None = None
    report_to: list[Literal["tensorboard", "wandb"]] = Field(default_factory=list)


class RLGates(StageSettings):
    """Stop (exit 2) when there is nothing to learn from or the policy runs away."""

    stall_steps: int | None = Field(default=5, ge=1, description="stop after this many steps in a row in which every "
                                    "group's rewards were identical (no learning signal); null: never")
    max_kl: float | None = Field(default=5.0, gt=0, description="stop when the KL to the starting policy exceeds this "
                                 "(needs beta > 0); null: never")


class Settings(StageSettings):
    """The ``rl`` stage: online multi-turn RL of a SAC policy, credit on the State-Action Chain's actions."""

    credit: Literal["token", "turn", "state"] = Field(default=
        "state", description="token: GRPO, one dialog-level advantage on every trained token; turn: per-turn "
        "return-to-go against the group's same-turn baseline; state: GiGPO-like, the dialog advantage plus "
        "the turn's return against the other turns taken from the same state block")
    loss_on: Literal["action", "action+reply", "turn"] = Field(default=
        "action+reply", description="tokens of each assistant turn that carry the loss: the action tag block "
        "(the state level), the action block and the reply, or the whole turn (state block too)")
    state_key: Literal["state", "state+turn", "state+last_action"] = Field(default=
        "state+turn", description="what makes two turns 'the same state' for credit=state: the policy's own "
        "state block (u_motivation, u_emotion), that block at the same turn of the dialog, or that block and "
        "the policy's previous action (an effect still pending is then part of the state)")
    state_scope: Literal["group", "batch"] = Field(default="group", description="where same-state turns are "
        "pooled for credit=state: within a GRPO group (GiGPO), or over every dialog of the step (the state "
        "is a discrete latent that different openings share)")
    state_weight: float = Field(default=1.0, ge=0, description="weight of the state-level advantage (GiGPO's omega)")
    scale: Literal["group", "none"] = Field(default="group", description="divide advantages by their group's std")
    adapter: AdapterSection = Field(default_factory=AdapterSection)
    rollout: RolloutSettings = Field(default_factory=RolloutSettings)
    reward: RewardSettings = Field(default_factory=RewardSettings)
    train: RLTrainSettings = Field(default_factory=RLTrainSettings)
    gates: RLGates = Field(default_factory=RLGates)
    threads: int | None = Field(default=None, ge=1, description="torch CPU threads")

    @model_validator(mode="after")
    def _kl_gate_needs_beta(self) -> Settings:
        if self.gates.max_kl is not None and self.train.beta == 0:
            self.gates = self.gates.model_copy(update={"max_kl": None})  # no reference model: no KL to watch
        return self


class RunConfig(Settings):
    """``sage-dialog train rl CONFIG``: the settings plus the policy, the seed openings and the output."""

    model: ModelSection = Field(description="the starting policy (a SAC model)")
    seeds: Path = Field(description="seed openings: one user opening per line (or a search seeds file)")
    output_dir: Path
    cache: str | None = Field(default=None, description="response cache of the judge and an LLM user (sqlite file)")

    def settings(self) -> Settings:
        return Settings.model_validate(self.model_dump(exclude={"model", "seeds", "output_dir", "cache"}))

"""TRL's GRPOTrainer with per-turn credit: the one thing TRL lacks here, as a small subclass.

TRL's multi-turn path is used as it is: a ``rollout_func`` plays whole dialogs and returns their
tokens with an ``env_mask`` (user tokens out of the loss), and extra fields that reach the reward
function. GRPO then gives every token of a dialog the same advantage. :class:`TurnCreditGRPOTrainer`
overrides ``_generate_and_score_completions`` to replace that ``(B,)`` advantage with a ``(B, T)``
one, built per assistant turn by :mod:`.credit` (``turn`` and ``state`` credit); TRL's loss accepts
``(B, T)`` advantages for exactly this purpose. With ``credit: token`` nothing is replaced.
"""

from __future__ import annotations

from typing import Any

from sage_dialog.stages.rl.credit import Episode, advantages

# extra fields the rollout function returns per dialog (they reach the reward function and come back here)
TURN_REWARDS = "sage_turn_rewards"
STATE_KEYS = "sage_state_keys"
TURN_SPANS = "sage_turn_spans"


def turn_credit_trainer_class() -> type:
    """The subclass, built on first use (importing TRL takes seconds)."""
    import torch
    from accelerate.utils import gather_object
    from trl import GRPOTrainer

    class TurnCreditGRPOTrainer(GRPOTrainer):  # type: ignore[misc]
        """GRPO with per-turn advantages (see the module docstring)."""

        def __init__(self, *args: Any, credit: str = "token", gamma: float = 1.0, scale: str = "group",
                     state_weight: float = 1.0, state_scope: str = "group", **kwargs: Any):
            super().__init__(*args, **kwargs)
            self.credit = credit
            self.gamma = gamma
            self.state_weight = state_weight
            self.credit_scale = scale
            self.state_scope = state_scope

        def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
            out = super()._generate_and_score_completions(inputs)
            if self.credit == "token":
                return out
            local = [(x[TURN_REWARDS], x[STATE_KEYS], x[TURN_SPANS]) for x in inputs]
            rows = gather_object(local)  # every process's dialogs, in the global order GRPO groups them in
            g = int(self.num_generations or 1)
            episodes = [Episode(group=i // g, turn_rewards=list(r), state_keys=list(k))
                        for i, (r, k, _s) in enumerate(rows)]
            per_turn = advantages(episodes, self.credit, gamma=self.gamma, scale=self.credit_scale,  # type: ignore[arg-type]
                                  state_weight=self.state_weight, scope=self.state_scope)  # type: ignore[arg-type]
            first = self.accelerator.process_index * len(inputs)
            width = out["completion_ids"].shape[1]
            adv = torch.zeros((len(inputs), width), dtype=torch.float32, device=out["completion_ids"].device)
            for row in range(len(inputs)):
                for (lo, hi), a in zip(rows[first + row][2], per_turn[first + row], strict=True):
                    adv[row, lo:min(hi, width)] = a
            out["advantages"] = adv
            return out

    return TurnCreditGRPOTrainer

"""Credit assignment over whole dialogs: one advantage per assistant turn, three ways.

Every dialog (an *episode*) is one of a GRPO group: the ``group_size`` dialogs played from the same
seed opening. Its assistant turns carry rewards ``r_k`` (they sum to the dialog's reward ``R``) and the
state the turn answered (the policy's own ``u_*`` block).

* ``token`` - GRPO: ``A = (R - mean_group R) / std_group R`` on every turn (the field's baseline).
* ``turn`` - per-turn return-to-go ``G_k = sum_j>=k gamma^(j-k) r_j`` against the mean of ``G_k`` over
  the group's dialogs at the same turn ``k`` (a critic-free per-turn baseline).
* ``state`` - GiGPO (arXiv 2505.10978) with the state read, not hashed: the dialog advantage above,
  plus ``omega x (G_k - mean G) / std G`` over the turns of the group that answered the *same state*
  (the same state block, by default at the same turn). A state met once gets no state term.
  ``scope: batch`` pools those turns over every dialog of the step, not only the group's: the state is
  a discrete latent shared by different openings (GiGPO, which hashes observations, can only match
  states within a group), so a state's baseline rests on more turns.

``scale: none`` leaves out the division by the standard deviation (Dr. GRPO's advice).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import fmean, pstdev
from typing import Literal

EPS = 1e-4


@dataclass
class Episode:
    """One dialog's turn rewards and the state key of each of its assistant turns."""

    group: int
    turn_rewards: list[float]
    state_keys: list[str]

    @property
    def reward(self) -> float:
        return float(sum(self.turn_rewards))


def returns(rewards: Sequence[float], gamma: float) -> list[float]:
    """Return-to-go of every turn."""
    out = [0.0] * len(rewards)
    acc = 0.0
    for k in range(len(rewards) - 1, -1, -1):
        acc = rewards[k] + gamma * acc
        out[k] = acc
    return out


def _normalized(values: list[float], scale: str) -> list[float]:
    if len(values) < 2:
        return [0.0] * len(values)
    m = fmean(values)
    if scale == "none":
        return [v - m for v in values]
    s = pstdev(values)
    return [(v - m) / (s + EPS) for v in values]


def advantages(episodes: Sequence[Episode], credit: Literal["token", "turn", "state"], *, gamma: float = 1.0,
               scale: str = "group", state_weight: float = 1.0,
               scope: Literal["group", "batch"] = "group") -> list[list[float]]:
    """Per-turn advantages of every episode (see the module docstring)."""
    groups: dict[int, list[int]] = defaultdict(list)
    for i, e in enumerate(episodes):
        groups[e.group].append(i)
    out: list[list[float]] = [[0.0] * len(e.turn_rewards) for e in episodes]
    dialog_adv = [0.0] * len(episodes)
    for members in groups.values():
        for i, a in zip(members, _normalized([episodes[i].reward for i in members], scale), strict=True):
            dialog_adv[i] = a
    if credit == "token":
        return [[dialog_adv[i]] * len(e.turn_rewards) for i, e in enumerate(episodes)]
    rtg = [returns(e.turn_rewards, gamma) for e in episodes]
    pools = [list(range(len(episodes)))] if credit == "state" and scope == "batch" else list(groups.values())
    for members in pools:
        cells: dict[object, list[tuple[int, int]]] = defaultdict(list)
        for i in members:
            for k in range(len(rtg[i])):
                cells[k if credit == "turn" else episodes[i].state_keys[k]].append((i, k))
        for cell in cells.values():
            normed = _normalized([rtg[i][k] for i, k in cell], scale)
            for (i, k), a in zip(cell, normed, strict=True):
                out[i][k] = a if credit == "turn" else dialog_adv[i] + state_weight * a
    return out  # a state met once normalizes to 0: its turn keeps the dialog advantage


def identical_rewards(episodes: Sequence[Episode]) -> bool:
    """Whether every group's dialogs got the same reward (then GRPO has nothing to learn from)."""
    groups: dict[int, list[float]] = defaultdict(list)
    for e in episodes:
        groups[e.group].append(e.reward)
    return all(max(v) - min(v) < 1e-9 for v in groups.values())

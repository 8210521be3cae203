"""How users move in the sandbox world: two presets of the same states, actions and fit table.

``standard`` (the demo's world): the action that fits a state best also moves the user to the best
next state (:func:`world.transition`), so choosing the best action turn by turn is (nearly) optimal.

``long_horizon``: the same fit table, with delayed consequences, so that per-turn greedy choice is
wrong by design:

* **pleases now, costs later** - in a bad state (sad, anxious, angry) the fitting action
  (:data:`world.BEST`: comfort, reassure, validate; fit +1) soothes without moving the user on: they
  stay in that state, and a dialog of soothing ends where it began (valence 0);
* **pays two turns on** - the state's *patient* action (:data:`PATIENT`: validate when sad, advise
  when anxious, comfort when angry; fit 0, "fine") changes nothing at once, but after the *next*
  reply the user is happy (valence 2), unless that next reply is clumsy (fit -1), which spoils it.

Everything else follows :func:`world.transition`. Over ``T >= 2`` turns from a bad state the
greedy policy earns ``1.0`` (all fits +1, final valence 0), while patient-then-fitting earns up to
``(T - 1) / T + 1`` (1.5 at T=2, 1.67 at T=3, 1.75 at T=4). The delayed effect is read from the
dialog text alone (states from user utterances, actions from replies), like every other rule here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sage_dialog.core.errors import UserError
from sage_dialog.sandbox import world

PRESETS = ("standard", "long_horizon")
BAD_STATES = tuple(k for k, s in world.STATES.items() if s.valence == 0)
# the action that pays two turns on in each bad state (fit 0 there: "fine", not fitting)
PATIENT: dict[str, str] = {"sad": "validate", "anxious": "advise", "angry": "comfort"}


@dataclass(frozen=True)
class Step:
    """The user's state after one reply, and whether a delayed effect fires after the next reply."""

    state: str
    pending: bool = False


def check_preset(name: str) -> str:
    if name not in PRESETS:
        raise UserError(f"sandbox rules {name!r}: unknown; presets: {', '.join(PRESETS)}")
    return name


def step(preset: str, state: str, action: str | None, pending: bool = False) -> Step:
    """The user's next state after ``action`` in ``state`` (``pending``: a patient action was taken
    one reply ago) under ``preset``."""
    if preset == "standard":
        return Step(world.transition(state, action))
    f = world.fit(state, action)
    if pending:
        return Step("happy") if f >= 0 else Step(world.transition(state, action))
    if state in BAD_STATES and action == PATIENT[state]:
        return Step(state, pending=True)
    if state in BAD_STATES and action == world.BEST[state]:
        return Step(state)
    return Step(world.transition(state, action))


@dataclass
class Replay:
    """A dialog read under a preset: per assistant turn the state it answered, its action and fit;
    then the state the last reply leaves the user in and whether an effect is still pending."""

    states: list[str | None]
    actions: list[str | None]
    fits: list[int]
    final_state: str | None
    pending: bool


def replay(preset: str, turns: Sequence[object]) -> Replay:
    """Read ``turns`` (``Turn`` objects) under ``preset``: states from user text, actions from replies."""
    state: str | None = None
    pending = False
    states: list[str | None] = []
    actions: list[str | None] = []
    fits: list[int] = []
    final: str | None = None
    for t in turns:
        role, text = getattr(t, "role", None), str(getattr(t, "text", ""))
        if role == "user":
            read = world.read_state(text)
            state = read or state
            final = state
        elif role == "assistant":
            action = world.read_action(text)
            states.append(state)
            actions.append(action)
            fits.append(world.fit(state, action))
            if state is None:
                final, pending = None, False
                continue
            nxt = step(preset, state, action, pending)
            final, pending = nxt.state, nxt.pending
    return Replay(states, actions, fits, final, pending)


def turn_rewards(preset: str, turns: Sequence[object]) -> list[float]:
    """The ground-truth reward of a dialog spread over its assistant turns: ``fit / T`` per turn, and
    the final valence / 2 on the last one. They sum to :func:`dialog_reward`."""
    r = replay(preset, turns)
    n = len(r.fits)
    if n == 0:
        return []
    out = [f / n for f in r.fits]
    out[-1] += (world.STATES[r.final_state].valence / 2) if r.final_state else 0.0
    return out


def dialog_reward(preset: str, turns: Sequence[object]) -> float:
    """``mean(fit over assistant turns) + valence(final state) / 2``, in [-1, 2], under ``preset``."""
    return float(sum(turn_rewards(preset, turns)))

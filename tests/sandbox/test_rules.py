"""The sandbox's rule presets: standard keeps the demo's dynamics; long_horizon makes greedy wrong."""

from __future__ import annotations

import asyncio
import random

import pytest

from sage_dialog.core.schema import Turn
from sage_dialog.roles.factory import is_oracle, make_pairwise_judge, make_selector, make_user
from sage_dialog.roles.protocols import PairTask, SelectionTask
from sage_dialog.sandbox import corpus, rules, world
from sage_dialog.sandbox.oracles import OracleReward, OracleUserSimulator


def play(policy, opening_state: str, turns: int, preset: str, seed: int = 0) -> list[Turn]:
    """A dialog between a scripted assistant (``policy(state, k) -> action``) and the oracle user."""
    rng = random.Random(seed)
    user = OracleUserSimulator(seed=seed, rules=preset)
    dialog = [Turn(role="user", text=world.user_utterance(opening_state, "exam", rng))]
    for k in range(turns):
        state = world.read_state(dialog[-1].text)
        dialog.append(Turn(role="assistant", text=world.assistant_reply(policy(state, k), "exam", rng)))
        if k < turns - 1:
            dialog.append(Turn(role="user", text=user.next_utterance(dialog, seed)))
    return dialog


def greedy(state, _k):
    return world.BEST[state]


def patient(state, k):
    return rules.PATIENT[state] if k == 0 and state in rules.PATIENT else world.BEST[state]


def test_standard_preset_is_the_demo_world() -> None:
    for d in corpus.generate_corpus(corpus.CorpusConfig(n_dialogs=200, seed=3)):
        assert rules.dialog_reward("standard", d.turns) == pytest.approx(world.dialog_reward(d))
        assert sum(rules.turn_rewards("standard", d.turns)) == pytest.approx(world.dialog_reward(d))


@pytest.mark.parametrize("state", rules.BAD_STATES)
@pytest.mark.parametrize("turns,best", [(2, 1.5), (3, 1 + 2 / 3), (4, 1.75)])
def test_long_horizon_greedy_loses_to_patience(state: str, turns: int, best: float) -> None:
    g = play(greedy, state, turns, "long_horizon")
    p = play(patient, state, turns, "long_horizon")
    assert rules.dialog_reward("long_horizon", g) == pytest.approx(1.0)  # every fit +1, stuck in a bad state
    assert rules.dialog_reward("long_horizon", p) == pytest.approx(best)
    assert rules.replay("long_horizon", p).final_state == "happy"
    assert sum(rules.turn_rewards("long_horizon", p)) == pytest.approx(best)
    # in the standard world the greedy policy is the better one
    assert rules.dialog_reward("standard", play(greedy, state, turns, "standard")) > \
        rules.dialog_reward("standard", play(patient, state, turns, "standard"))


def test_a_clumsy_reply_spoils_the_delayed_effect() -> None:
    d = play(lambda s, k: rules.PATIENT[s] if k == 0 else "joke", "sad", 2, "long_horizon")
    assert rules.replay("long_horizon", d).final_state != "happy"


def test_oracle_variants_through_the_role_factory() -> None:
    assert is_oracle("oracle") and is_oracle("oracle:long_horizon") and not is_oracle("hf:oracle")
    user = make_user("oracle:long_horizon", pool=None, seed=1)  # type: ignore[arg-type]
    assert user.rules == "long_horizon"
    # the per-turn selector still prefers the fitting (greedy) reply: search is myopic by design
    sel = make_selector("oracle:long_horizon", pool=None)  # type: ignore[arg-type]
    hist = [Turn(role="user", text="I feel sad about my exam.")]
    cands = [Turn(role="assistant", text=world.assistant_reply(a, "exam", random.Random(0)))
             for a in ("validate", "comfort")]
    decision = asyncio.run(sel.select([SelectionTask(history=hist, candidates=cands)]))[0]
    assert decision.choice == 1
    # the whole-dialog judge sees the delayed payoff
    judge = make_pairwise_judge("oracle:long_horizon", pool=None)  # type: ignore[arg-type]
    a, b = play(patient, "sad", 3, "long_horizon"), play(greedy, "sad", 3, "long_horizon")
    v = asyncio.run(judge.compare([PairTask(seed="s", model_a="p", model_b="g", a=a, b=b)]))[0]
    assert v.winner == "a"
    assert OracleReward("long_horizon")(a) > OracleReward("long_horizon")(b)


def test_unknown_preset_is_a_clear_error() -> None:
    from sage_dialog.core.errors import UserError

    with pytest.raises(UserError, match="unknown; presets: standard, long_horizon"):
        make_user("oracle:nope", pool=None)  # type: ignore[arg-type]

"""Credit levels on hand-made groups: token is GRPO, turn is return-to-go, state compares actions from one state."""

from __future__ import annotations

import pytest

from sage_dialog.stages.rl.credit import Episode, advantages, identical_rewards, returns


def test_returns_to_go() -> None:
    assert returns([1.0, 0.0, 2.0], 1.0) == [3.0, 2.0, 2.0]
    assert returns([1.0, 0.0, 2.0], 0.5) == pytest.approx([1.5, 1.0, 2.0])


def test_token_credit_is_grpo_on_the_dialog_reward() -> None:
    eps = [Episode(0, [0.0, 1.0], ["s@0", "s@1"]), Episode(0, [0.0, 0.0], ["s@0", "s@1"])]
    adv = advantages(eps, "token")
    assert adv[0][0] == adv[0][1] > 0 > adv[1][0] == adv[1][1]
    assert adv[0][0] == pytest.approx(-adv[1][0])


def test_turn_credit_compares_the_same_turn_across_the_group() -> None:
    # both dialogs did the same first turn; only the second differs: turn 0's advantage is the shared future
    eps = [Episode(0, [1.0, 1.0], ["a", "a"]), Episode(0, [1.0, 0.0], ["a", "a"])]
    adv = advantages(eps, "turn", scale="none")
    assert adv[0] == pytest.approx([0.5, 0.5]) and adv[1] == pytest.approx([-0.5, -0.5])


def test_state_credit_credits_the_action_taken_from_the_same_state() -> None:
    # group of 3 from one opening: at turn 0 all in state sad; a delayed payoff shows in the return only
    eps = [
        Episode(0, [0.0, 0.33, 1.33], ["sad@0", "sad@1", "happy@2"]),  # patient first move
        Episode(0, [0.33, 0.33, 0.33], ["sad@0", "sad@1", "sad@2"]),  # greedy
        Episode(0, [0.33, 0.33, 0.33], ["sad@0", "sad@1", "sad@2"]),  # greedy
    ]
    adv = advantages(eps, "state", scale="none", state_weight=1.0)
    dialog = advantages(eps, "token", scale="none")
    # the patient dialog's first turn gets its dialog advantage plus the state-level one
    assert adv[0][0] > dialog[0][0] > 0
    # a state met once (happy@2) keeps the dialog advantage
    assert adv[0][2] == pytest.approx(dialog[0][2])
    # greedy turns from the same state are pushed down
    assert adv[1][0] < dialog[1][0] < 0


def test_groups_do_not_mix() -> None:
    eps = [Episode(0, [1.0], ["x"]), Episode(0, [0.0], ["x"]), Episode(1, [5.0], ["x"]), Episode(1, [5.0], ["x"])]
    for credit in ("token", "turn", "state"):
        adv = advantages(eps, credit)  # type: ignore[arg-type]
        assert adv[2] == adv[3] == [0.0]
    assert not identical_rewards(eps)
    assert identical_rewards(eps[2:])


def test_batch_scope_pools_a_state_over_the_groups_of_a_step() -> None:
    # two openings, two dialogs each; state "sad" is met in both groups. Within a group the two sad
    # turns have the same return, so group scope gives them no state term; pooled over the step, the
    # group whose sad turns led further is credited against the other.
    eps = [Episode(0, [1.0], ["sad"]), Episode(0, [1.0], ["sad"]),
           Episode(1, [0.0], ["sad"]), Episode(1, [0.0], ["sad"])]
    grouped = advantages(eps, "state", scale="none")
    assert all(a == [0.0] for a in grouped)  # identical dialogs inside each group: nothing to learn
    pooled = advantages(eps, "state", scale="none", scope="batch")
    assert pooled[0] == pooled[1] == [pytest.approx(0.5)] and pooled[2] == pooled[3] == [pytest.approx(-0.5)]
    # scope changes nothing for token or turn credit
    assert advantages(eps, "turn", scope="batch") == advantages(eps, "turn")


def test_state_key_modes() -> None:
    from sage_dialog.core.schema import Tags
    from sage_dialog.stages.rl.rollout import state_key

    text = "{u_motivation: venting, u_emotion: sad} {a_motivation: comfort, a_emotion: gentle} I'm here."
    assert state_key(text, "hi", 2) == "venting|sad"
    assert state_key(text, "hi", 2, "state+turn") == "venting|sad@2"
    assert state_key(text, "hi", 2, "state+last_action", Tags(motivation="advice", emotion="calm")) == \
        "venting|sad<advice|calm"
    assert state_key(text, "hi", 0, "state+last_action", None) == "venting|sad<-"
    assert state_key("no tags here", "I  Feel bad", 1) == "text:i feel bad"

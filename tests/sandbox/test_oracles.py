"""Oracle roles measured against the world's gold tags and ground-truth reward."""

from __future__ import annotations

import asyncio
import itertools
import random

import pytest

from sage_dialog.core.errors import UserError
from sage_dialog.core.schema import Dialog, Turn
from sage_dialog.roles import protocols as roles
from sage_dialog.roles.protocols import PairTask, SelectionTask
from sage_dialog.sandbox import corpus, world
from sage_dialog.sandbox.oracles import (
    OracleActionClassifier,
    OracleAnnotator,
    OraclePairwiseJudge,
    OracleSelector,
    OracleUserSimulator,
    oracle_for,
)


@pytest.fixture(scope="module")
def dialogs() -> list[Dialog]:
    return corpus.generate_corpus(corpus.CorpusConfig(n_dialogs=200, seed=11))


def test_factory_gives_objects_implementing_the_role_protocols():
    assert isinstance(oracle_for("annotator"), roles.Annotator)
    assert isinstance(oracle_for("selector"), roles.Selector)
    assert isinstance(oracle_for("pairwise"), roles.PairwiseJudge)
    assert isinstance(oracle_for("user", seed=3), roles.UserSimulator)
    with pytest.raises(UserError, match="no sandbox oracle"):
        oracle_for("critic")


def test_annotator_recovers_gold_tags(dialogs):
    results = asyncio.run(OracleAnnotator().annotate(dialogs))
    right = total = 0
    for d, r in zip(dialogs, results, strict=True):
        assert r.tags is not None, r.error
        for tags, gold in zip(r.tags, d.meta["gold"], strict=True):
            total += 1
            right += (tags.motivation, tags.emotion, tags.topics) == (gold["motivation"], gold["emotion"], gold["topics"])
    assert right / total >= 0.99


def test_annotator_rejects_text_it_cannot_read():
    d = Dialog(id="x_1", turns=[Turn(role="user", text="Nice weather."), Turn(role="assistant", text="Sorry.")])
    (r,) = asyncio.run(OracleAnnotator().annotate([d]))
    assert r.tags is None and "turn 0" in (r.error or "")


def test_action_classifier_matches_gold(dialogs):
    texts = [t.text for d in dialogs for t in d.turns if t.role == "assistant"]
    gold = [g["key"] for d in dialogs for t, g in zip(d.turns, d.meta["gold"], strict=True) if t.role == "assistant"]
    assert OracleActionClassifier().classify(texts) == gold


def _candidates(state: str, noun: str, rng: random.Random) -> list[Turn]:
    return [Turn(role="assistant", text=world.assistant_reply(a, noun, rng)) for a in world.ACTIONS]


def test_selector_picks_the_fitting_action_whatever_the_order():
    rng = random.Random(0)
    sel = OracleSelector()
    for state, seed in itertools.product(world.STATES, range(4)):
        history = [Turn(role="user", text=world.user_utterance(state, "exam", rng))]
        cands = _candidates(state, "exam", rng)
        rng.shuffle(cands)
        (dec,) = asyncio.run(sel.select([SelectionTask(history=history, candidates=cands, seed=seed)]))
        assert dec.outcome == "chosen" and dec.mode == "oracle"
        assert world.read_action(cands[dec.choice].text) == world.BEST[state]
        assert sorted(dec.order) == list(range(len(cands)))
        shown = int(dec.raw_output.split()[1]) - 1
        assert dec.order[shown] == dec.choice


def test_selector_says_none_good_for_unreadable_candidates():
    history = [Turn(role="user", text="I feel sad about my dog.")]
    cands = [Turn(role="assistant", text="Blue."), Turn(role="assistant", text="Green.")]
    (dec,) = asyncio.run(OracleSelector().select([SelectionTask(history=history, candidates=cands)]))
    assert dec.outcome == "none_good" and dec.choice is None


def test_pairwise_judge_agrees_with_ground_truth_reward_in_both_orders(dialogs):
    judge = OraclePairwiseJudge()
    tasks = []
    for i in range(0, 100, 2):
        a, b = dialogs[i], dialogs[i + 1]
        for swap in (False, True):
            tasks.append(PairTask(seed=str(i), model_a="a", model_b="b", a=a.turns, b=b.turns, swap=swap))
    verdicts = asyncio.run(judge.compare(tasks))
    agree = 0
    for t, v in zip(tasks, verdicts, strict=True):
        ra, rb = world.dialog_reward(t.a), world.dialog_reward(t.b)
        expected = "tie" if ra == rb else ("a" if ra > rb else "b")
        agree += v.winner == expected
        assert v.shown_first == ("b" if t.swap else "a") and v.parsed
    assert agree == len(tasks)
    # the raw answer is stated in shown order: swapping flips the letter, not the winner
    v0, v1 = verdicts[0], verdicts[1]
    if v0.winner != "tie":
        assert v0.winner == v1.winner and v0.raw_output != v1.raw_output


def test_user_simulator_follows_the_dynamics_and_is_deterministic():
    rng = random.Random(5)
    user = OracleUserSimulator(seed=1)
    for state in world.STATES:
        for action in world.ACTIONS:
            turns = [Turn(role="user", text=world.user_utterance(state, "boss", rng)),
                     Turn(role="assistant", text=world.assistant_reply(action, "boss", rng))]
            (text,) = asyncio.run(user.reply([turns], seeds=[7]))
            assert world.read_state(text) == world.transition(state, action), (state, action, text)
            assert world.read_topic(text) == "work"
            assert asyncio.run(user.reply([turns], seeds=[7])) == [text]

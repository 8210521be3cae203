"""The sandbox world: its text carries its labels, its dynamics and reward behave as specified."""

from __future__ import annotations

import random

import pytest

from sage_dialog.core.schema import Turn
from sage_dialog.sandbox import corpus, world


def test_every_template_reads_back_as_its_own_label():
    rng = random.Random(0)
    for state in world.STATES:
        for topic, nouns in world.TOPICS.items():
            for noun in nouns:
                for reaction in (None, 1, -1):
                    text = world.user_utterance(state, noun, rng, reaction=reaction)
                    assert world.read_state(text) == state, text
                    assert world.read_topic(text) == topic, text
    for action, spec in world.ACTIONS.items():
        for template in spec.templates:
            for topic, nouns in world.TOPICS.items():
                text = template.format(noun=nouns[0])
                assert world.read_action(text) == action, text
                assert world.read_topic(text) == topic, text


def test_readers_ignore_tags_and_say_none_when_text_has_no_label():
    assert world.read_action("{a_motivation: comfort, a_emotion: gentle, a_topic: []} Nice weather.") is None
    assert world.read_state("Nice weather today.") is None
    assert world.read_action("Sorry, haha.") is None  # two actions equally: ambiguous, no label


def test_fit_table_has_one_best_action_per_state_and_tempting_is_clumsy():
    for state, row in world.FIT.items():
        assert set(row) == set(world.ACTIONS)
        assert sorted(row.values()).count(1) == 1
        assert row[world.TEMPTING[state]] == -1


def test_dynamics_fitting_improves_clumsy_worsens():
    for state in world.STATES:
        v = world.STATES[state].valence
        good = world.transition(state, world.BEST[state])
        assert world.STATES[good].valence >= v and (v == 2 or world.STATES[good].valence > v)
        bad = world.transition(state, world.TEMPTING[state])
        assert world.STATES[bad].valence <= v and (v == 0 or world.STATES[bad].valence < v)


def _dialog(state: str, actions: list[str]) -> list[Turn]:
    rng = random.Random(1)
    turns = []
    for a in actions:
        turns.append(Turn(role="user", text=world.user_utterance(state, "dog", rng)))
        turns.append(Turn(role="assistant", text=world.assistant_reply(a, "dog", rng)))
        state = world.transition(state, a)
    return turns


def test_reward_prefers_fitting_behaviour_and_counts_consequences():
    good = world.dialog_reward(_dialog("sad", ["comfort", "advise", "celebrate"]))
    bad = world.dialog_reward(_dialog("sad", ["joke", "reassure", "joke"]))
    assert good == pytest.approx(1 + 2 / 2)
    assert bad < 0 < good
    # the same first action, different later choices: the later ones matter
    assert world.dialog_reward(_dialog("sad", ["comfort", "advise"])) > world.dialog_reward(
        _dialog("sad", ["comfort", "comfort"]))


def test_corpus_mixes_good_and_clumsy_behaviour_reproducibly():
    cfg = corpus.CorpusConfig(n_dialogs=300, seed=3)
    a, b = corpus.generate_corpus(cfg), corpus.generate_corpus(cfg)
    assert [d.model_dump() for d in a] == [d.model_dump() for d in b]
    fits = []
    for d in a:
        gold = d.meta["gold"]
        assert len(gold) == len(d.turns)
        assert d.turns[0].role == "user" and all(t.state is None and t.action is None for t in d.turns)
        fits += world.score_turns(d.turns).fits
    share_good = fits.count(1) / len(fits)
    assert 0.3 < share_good < 0.55 and fits.count(-1) / len(fits) > 0.3


def test_corpus_has_lexical_variety():
    texts = {t.text for d in corpus.generate_corpus(corpus.CorpusConfig(n_dialogs=200)) for t in d.turns}
    assert len(texts) > 500

"""The SAC codec: render/parse identity, tolerant parsing, never losing reply text."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sage_dialog.core import sac
from sage_dialog.core.schema import Tags

word = st.text(alphabet=st.characters(whitelist_categories=("Ll", "Lu", "Nd"), max_codepoint=0x2FF), min_size=1, max_size=8)
phrase = st.lists(word, min_size=1, max_size=3).map(" ".join).filter(lambda s: s.lower() not in ("null", "none"))
tags_st = st.builds(
    Tags,
    motivation=st.none() | phrase,
    emotion=st.none() | phrase,
    topics=st.none() | st.lists(phrase, max_size=3),
)
reply_st = st.text(min_size=0, max_size=60).filter(lambda s: not s[:1].isspace() and not s.startswith("{"))


@given(state=tags_st, action=tags_st, reply=reply_st)
def test_render_then_parse_is_identity(state: Tags, action: Tags, reply: str) -> None:
    parsed = sac.parse(sac.render_turn(reply, state=state, action=action))
    assert parsed.state == state
    assert parsed.action == action
    assert parsed.reply == reply


@given(text=st.text(max_size=200))
def test_parse_never_loses_reply_text(text: str) -> None:
    parsed = sac.parse(text)
    if not parsed.has_tags:
        assert parsed.reply == text
    else:
        assert text.endswith(parsed.reply)


@pytest.mark.parametrize(
    "text",
    [
        "{user_motivation: venting, user_emotion: sad} {assistant_motivation: comfort, assistant_emotion: gentle} Hi",
        "{u_motivation: venting, u_emotion: sad}  {a_motivation: comfort,a_emotion:gentle}Hi",
    ],
)
def test_both_key_spellings_are_read(text: str) -> None:
    parsed = sac.parse(text)
    assert parsed.state == Tags(motivation="venting", emotion="sad")
    assert parsed.action == Tags(motivation="comfort", emotion="gentle")
    assert parsed.reply == "Hi"


def test_tolerant_parsing_of_nulls_lists_extras_and_braces_in_reply() -> None:
    text = "{u_motivation: null, u_topic: [ job , interview ], intensity: high} {a_topic: []} A {b} c }"
    parsed = sac.parse(text)
    assert parsed.state == Tags(topics=["job", "interview"], extra={"intensity": "high"})
    assert parsed.action == Tags(topics=[])
    assert parsed.reply == "A {b} c }"


def test_brace_group_that_is_not_tags_stays_in_reply() -> None:
    assert sac.parse("{just braces} and text").reply == "{just braces} and text"
    assert not sac.parse("{just braces} and text").has_tags


def test_steering_prefill_closes_a_complete_action_and_leaves_a_partial_one_open() -> None:
    state = Tags(motivation="worry", emotion="anxious", topics=["exam"])
    full = sac.steering_prefill(Tags(motivation="joke", emotion="playful", topics=[]), state)
    assert full == ("{u_motivation: worry, u_emotion: anxious, u_topic: [exam]} "
                    "{a_motivation: joke, a_emotion: playful, a_topic: []} ")
    partial = sac.steering_prefill(Tags(emotion="playful"))
    assert partial == "{a_emotion: playful, "
    # a model that completes the open block yields a parseable turn with the forced field
    assert sac.parse(partial + "a_topic: [exam]} Ha!").action == Tags(emotion="playful", topics=["exam"])


def test_render_refuses_values_that_would_break_the_syntax() -> None:
    with pytest.raises(sac.SacError):
        sac.render_block(Tags(motivation="a, b"), "action")
    assert sac.clean_value(" a, {b} ") == "a b"


def test_strip_all_removes_every_block() -> None:
    assert sac.strip_all("🤖: {a: b} {c: [d]} Hello {there}") == "🤖: Hello {there}"

"""The steerable-generation core against the tiny transformers model (random weights: garbage text,
but a full action prefill must come back exactly as forced)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sage_dialog.backends import SamplingParams, load_backend
from sage_dialog.core import sac
from sage_dialog.core.errors import UserError
from sage_dialog.core.schema import Tags, Turn
from sage_dialog.roles.assistant import StreamEvent, format_tags, generate_turns, stream_turn
from sage_dialog.roles.rollout import history_messages
from sage_dialog.roles.steering import parse_steering

MSGS = [{"role": "user", "content": "I failed my exam again."}]
SP = SamplingParams(temperature=0.8, max_tokens=12, seed=3)


@pytest.fixture(scope="module")
def backend(tiny_model: Path):
    return load_backend(f"hf:{tiny_model}")


def test_parse_steering_forms_and_errors() -> None:
    st = parse_steering(["a_emotion=playful", "a_topic=exam, work", "u_emotion=sad"])
    assert st.action == Tags(emotion="playful", topics=["exam", "work"])
    assert st.state == Tags(emotion="sad")
    assert st.as_dict() == {"u_emotion": "sad", "a_emotion": "playful", "a_topic": "exam, work"}
    assert parse_steering({"a_emotion": "", "a_motivation": None}).is_empty
    # values that would break the SAC syntax are cleaned, not passed through
    assert parse_steering({"a_emotion": "play{ful}"}).action == Tags(emotion="play ful")
    with pytest.raises(UserError, match="unknown key 'emotion'"):
        parse_steering(["emotion=sad"])
    with pytest.raises(UserError, match="not KEY=VALUE"):
        parse_steering(["a_emotion"])


def test_format_tags_is_readable() -> None:
    assert format_tags(Tags(motivation="joke", emotion="playful", topics=["exam"])) == (
        "motivation joke · emotion playful · topics exam"
    )
    assert format_tags(None) == "(none)"


def test_history_messages_render_sac_turns() -> None:
    turns = [
        Turn(role="user", text="hi"),
        Turn(role="assistant", text="hello", state=Tags(emotion="calm"), action=Tags(motivation="greet")),
    ]
    msgs = history_messages(turns, "be kind")
    assert msgs[0] == {"role": "system", "content": "be kind"}
    assert sac.parse(msgs[2]["content"]).action == Tags(motivation="greet")


def test_full_action_prefill_comes_back_exactly(backend) -> None:
    st = parse_steering(["a_motivation=joke", "a_emotion=playful", "a_topic=exam"])
    cands = asyncio.run(generate_turns(backend, MSGS, steering=st, n=3, sampling=SP))
    assert len(cands) == 3
    for c in cands:
        assert c.action == Tags(motivation="joke", emotion="playful", topics=["exam"])
        assert c.state is not None  # the model wrote (or we closed) a state block first
        assert "{" not in c.reply[:1]
        assert sac.parse(c.text).action == c.action


def test_partial_action_and_forced_state(backend) -> None:
    st = parse_steering({"a_emotion": "playful", "u_motivation": "venting"})
    (c,) = asyncio.run(generate_turns(backend, MSGS, steering=st, n=1, sampling=SP))
    assert c.state is not None and c.state.motivation == "venting"
    assert c.action is not None and c.action.emotion == "playful"  # forced value wins over the model's
    assert c.text.startswith("{u_motivation: venting")


def test_stream_turn_latent_first_then_text(backend) -> None:
    st = parse_steering(["a_motivation=joke", "a_emotion=playful", "a_topic=exam"])

    async def collect() -> list[StreamEvent]:
        return [ev async for ev in stream_turn(backend, MSGS, steering=st, sampling=SP)]

    events = asyncio.run(collect())
    kinds = [e.kind for e in events]
    assert kinds[0] == "latent" and kinds[-1] == "done"
    assert events[0].action == Tags(motivation="joke", emotion="playful", topics=["exam"])
    done = events[-1].candidate
    assert done is not None
    streamed = "".join(e.text for e in events if e.kind == "text")
    assert streamed.strip() == done.reply
    assert done.action == events[0].action

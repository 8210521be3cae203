"""Streaming tag hold-back and the chat session, with a scripted SAC writer (the ``mock:`` provider
standing in for a trained model: it writes fixed tags + reply, honouring a prefill) so the text
carries real tags."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sage_dialog.backends.base import ChatRequest
from sage_dialog.backends.mock import MockBackend
from sage_dialog.core import io as sio
from sage_dialog.core import sac
from sage_dialog.core.schema import Dialog, Tags
from sage_dialog.interact.chat import ChatSession
from sage_dialog.roles.assistant import StreamEvent, _TagHold, stream_turn
from sage_dialog.roles.steering import parse_steering

FULL = "{u_motivation: venting, u_emotion: sad, u_topic: [exam]} {a_motivation: comfort, a_emotion: gentle, a_topic: [exam]} So sorry {about} that."


def scripted_sac_writer() -> MockBackend:
    """The ``mock:`` provider continuing ``FULL`` from wherever the prefill leaves off (or writing a
    numbered reply after forced tags); as with any model, a stop string ends the answer."""
    calls = 0

    def answer(r: ChatRequest, _: int) -> str:
        nonlocal calls
        calls += 1
        pre = r.prefill or ""
        if FULL.startswith(pre):
            return FULL[len(pre):]
        if pre.endswith("} "):
            return f"Reply number {calls}."
        return "a_topic: [exam]} ignored"  # inside an open block

    return MockBackend(label="sac-writer", fn=answer)


def test_tag_hold_char_by_char() -> None:
    hold = _TagHold()
    events: list[StreamEvent] = []
    for ch in FULL:
        events += hold.feed(ch)
    events += hold.feed("", final=True)
    assert events[0].kind == "latent"
    assert events[0].state == Tags(motivation="venting", emotion="sad", topics=["exam"])
    assert events[0].action == Tags(motivation="comfort", emotion="gentle", topics=["exam"])
    texts = [e.text for e in events if e.kind == "text"]
    assert "".join(texts) == "So sorry {about} that."
    assert not any("a_motivation" in t for t in texts)


def test_tag_hold_releases_a_brace_that_is_not_a_block() -> None:
    hold = _TagHold()
    events: list[StreamEvent] = []
    for ch in "{not a tag} hi":
        events += hold.feed(ch)
    assert "".join(e.text for e in events if e.kind == "text") == "{not a tag} hi"


def test_stream_turn_fallback_for_non_hf_backend() -> None:
    async def go() -> list[StreamEvent]:
        return [ev async for ev in stream_turn(scripted_sac_writer(), [{"role": "user", "content": "x"}])]

    events = asyncio.run(go())
    assert events[0].kind == "latent" and events[-1].kind == "done"
    assert events[-1].candidate is not None and events[-1].candidate.reply == "So sorry {about} that."


def test_partial_action_block_filled_by_model_forced_value_wins() -> None:
    from sage_dialog.roles.assistant import generate_turns

    st = parse_steering({"a_emotion": "playful"})
    (c,) = asyncio.run(generate_turns(scripted_sac_writer(), [{"role": "user", "content": "x"}], steering=st))
    assert c.state == Tags(motivation="venting", emotion="sad", topics=["exam"])  # the model's own state
    assert c.action == Tags(emotion="playful", topics=["exam"])  # forced emotion + the model's topic
    assert c.reply.startswith("Reply number")


def test_chat_session_steer_regen_alts_pick_save(tmp_path: Path) -> None:
    s = ChatSession(scripted_sac_writer(), stream=False)
    seen: list[tuple[str, object]] = []
    c1 = asyncio.run(s.send("I failed", lambda k, p: seen.append((k, p))))
    assert c1.action == Tags(motivation="comfort", emotion="gentle", topics=["exam"])
    assert seen[0][0] == "latent" and seen[1] == ("text", "So sorry {about} that.")
    s.steering = parse_steering(["a_motivation=joke", "a_emotion=playful", "a_topic=exam"])
    c2 = asyncio.run(s.regen())
    assert c2.action == Tags(motivation="joke", emotion="playful", topics=["exam"])
    assert s.steering.is_empty  # steering applies to one generation...
    c3 = asyncio.run(s.regen())
    assert c3.action == c2.action  # ...but /regen re-uses the steering the reply was made with
    alts = asyncio.run(s.alts(2))
    assert len(alts) == 2 and all(a.action == c2.action for a in alts)
    s.pick(2)
    assert len(s.turns) == 2 and s.turns[-1].text == alts[1].reply
    s.save(tmp_path / "d.jsonl")
    (d,) = list(sio.read_jsonl(tmp_path / "d.jsonl", Dialog))
    assert d.turns[1].action == c2.action
    assert sac.parse(sac.render_turn(d.turns[1].text, state=d.turns[1].state, action=d.turns[1].action)).action == c2.action

"""A model that half-learnt the SAC format (seen after a short SFT of SmolLM2): whatever it writes,
chat, serve and the steering core keep tag text and reply apart."""

from __future__ import annotations

import asyncio

import pytest

from sage_dialog.backends.base import ChatRequest
from sage_dialog.backends.mock import MockBackend
from sage_dialog.core import sac
from sage_dialog.core.schema import Tags
from sage_dialog.roles.assistant import generate_turns, stream_turn
from sage_dialog.roles.steering import parse_steering

MSGS = [{"role": "user", "content": "how was your weekend?"}]


def scripted(block: str, reply: str) -> MockBackend:
    """The ``mock:`` provider answering a block completion (prefill ends inside an open block) and a
    reply from scripts; it streams three characters at a time."""

    def answer(req: ChatRequest, _: int) -> str:
        open_block = (req.prefill or "").count("{") > (req.prefill or "").count("}")
        return block if open_block else reply

    return MockBackend(label="scripted", fn=answer, stream_chunk=3)


# what a tagless model wrote after a forced action, and the reply that must come out of it
CASES = [
    ("{a_emotion: happy, joke} It was great, thanks!", "It was great, thanks!"),
    ("a_motivation: joke} It was great, thanks!", "It was great, thanks!"),
    ("{a_motivation: joke, It was great, thanks!", "It was great, thanks!"),
    ("u_motivation: chat, u_emotion: calm, It was great", "It was great"),
    ("It was great, thanks!", "It was great, thanks!"),
    ("{a_motivation: joke", ""),
]


@pytest.mark.parametrize(("written", "reply"), CASES)
def test_a_steered_turn_never_shows_tag_text_as_the_reply(written: str, reply: str) -> None:
    # the model writes no state block (the "{" completion is chat text), then junk before its reply
    be = scripted(block="Hello there how are you", reply=written)
    st = parse_steering(["a_motivation=joke"])
    (c,) = asyncio.run(generate_turns(be, MSGS, steering=st, n=1))
    assert c.reply == reply
    assert c.stray == ("" if written == reply else sac.split_stray(written)[0])
    assert c.action is not None and c.action.motivation == "joke"
    assert not c.reply.startswith("{") and "a_motivation" not in c.reply

    async def streamed() -> tuple[str, object]:
        pieces, done = [], None
        async for ev in stream_turn(be, MSGS, steering=st):
            if ev.kind == "text":
                pieces.append(ev.text)
            elif ev.kind == "done":
                done = ev.candidate
        return "".join(pieces), done

    text, done = asyncio.run(streamed())
    assert text.strip() == reply  # nothing of the stray text was ever streamed as reply
    assert done is not None and done.reply == reply  # type: ignore[attr-defined]


def test_unsteered_turn_with_junk_and_its_latent_json() -> None:
    be = scripted(block="", reply="{u_motivation: chat} {a_emotion: happy, joke} Sure!")
    (c,) = asyncio.run(generate_turns(be, MSGS))
    assert c.state == Tags(motivation="chat") and c.reply == "Sure!"
    assert c.latent()["stray"] == "{a_emotion: happy, joke}"
    clean = scripted(block="", reply="{u_motivation: chat} Sure!")
    (c2,) = asyncio.run(generate_turns(clean, MSGS))
    assert "stray" not in c2.latent()


def test_chat_prints_stray_text_apart_from_the_reply() -> None:
    import io

    from sage_dialog.interact.chat import ChatSession, _run_turn

    be = scripted(block="Hello", reply="{a_motivation: joke, It was great")
    session = ChatSession(be, stream=True)
    out = io.StringIO()
    loop = asyncio.new_event_loop()
    try:
        _run_turn(loop, lambda on_event: session.send("hi", on_event), out)
    finally:
        loop.close()
    lines = out.getvalue().splitlines()
    assert "bot> It was great" in lines
    assert any(line.startswith("  · stray tag text") and "{a_motivation: joke," in line for line in lines)

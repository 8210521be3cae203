"""The web UI's candidates, driven from Python: regenerate keeps the earlier replies selectable."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sage_dialog.backends.mock import MockBackend
from sage_dialog.core import io as sio
from sage_dialog.core.schema import PreferencePair, Turn
from sage_dialog.interact.webui import WebApp, WebState, chat_messages


def numbered_sac_writer() -> MockBackend:
    """A stand-in for a trained SAC model: each call writes tags and a reply numbered by the call."""
    return MockBackend(
        label="numbered",
        outputs=[
            f"{{u_motivation: venting, u_emotion: sad, u_topic: []}} {{a_motivation: m{k}, a_emotion: calm, a_topic: []}} Reply {k}."
            for k in (1, 2, 3)
        ],
    )


async def _generate(app: WebApp, state: WebState) -> None:
    async for _ in app.generate(state, {}):
        pass


def test_regenerate_keeps_earlier_candidates_selectable(tmp_path: Path) -> None:
    app = WebApp(numbered_sac_writer(), tmp_path / "prefs.jsonl")
    state = WebState(turns=[Turn(role="user", text="I failed my exam")])
    asyncio.run(_generate(app, state))
    asyncio.run(_generate(app, state))  # regenerate
    asyncio.run(_generate(app, state))  # and again
    assert chat_messages(state)[-1]["content"] == "Reply 3."

    state, latent, note = app.select(state, -1)
    assert note == "Candidate 2 of 3" and chat_messages(state)[-1]["content"] == "Reply 2."
    assert "motivation m2" in latent
    state, _, note = app.select(state, -1)
    state, _, note = app.select(state, -1)  # stays at the first
    assert note == "Candidate 1 of 3" and state.turns[-1].text == "Reply 1."
    assert [t.role for t in state.turns] == ["user", "assistant"]  # the screen shows one reply, not three

    # keep the first candidate: it is chosen over both later ones
    state, msg = app.keep(state)
    assert "wrote 2 preference pair" in msg
    pairs = list(sio.read_jsonl(tmp_path / "prefs.jsonl", PreferencePair))
    assert {p.chosen.text for p in pairs} == {"Reply 1."}
    assert {p.rejected.text for p in pairs} == {"Reply 2.", "Reply 3."}

    state, _, note = app.select(state, +2)
    assert note == "Candidate 3 of 3" and state.turns[-1].text == "Reply 3."

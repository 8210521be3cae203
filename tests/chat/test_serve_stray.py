"""Issue 28: tag text never reaches ``content``. The five replies (of 20) in which the demo's M1, served
at temperature 1.0, wrote tag text inside its reply, replayed by the ``mock:`` backend through the real
app, uvicorn and the openai SDK, streamed and not."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from openai import OpenAI

from sage_dialog.backends.base import ChatRequest
from sage_dialog.backends.mock import MockBackend
from sage_dialog.interact.serve import create_app
from tests.support import serve_app

# what M1 wrote (tag blocks first, then these), and the reply content must be
WRITTEN = [
    ("gradeencouraging, a_topic: [work]} You could try one small thing with the office.",
     "You could try one small thing with the office."),
    ("makes sense Funny how it's a breath, it will be okay with the ofcomplaining, u_emotion: angry, "
     "u_topic: [work]} {a_motivation: reassurance, a_emotion: calm, a_topic: [work]} Take a breath about the job.",
     "makes sense Funny how it's a breath, Take a breath about the job."),
    ("ofhaha. {a_motivation: reassurance, a_emotion: calm, a_topic: [work]} You can handle the job. What happened?",
     "ofhaha. You can handle the job. What happened?"),
    ("seeking reassurance, a_emotion: calm, a_topic: [work]} It will be okay with the boss.",
     "It will be okay with the boss."),
    ("makes sense encouraging, a_topic: [work]} Make a hahahaha. How are you holding up?",
     "Make a hahahaha. How are you holding up?"),
]
TAG = re.compile(r"[ua]_(motivation|emotion|topic)|\{[^}]*:")


def _replay(request: ChatRequest, index: int) -> str:
    said = request.messages[-1]["content"]
    written = WRITTEN[int(said.split()[-1])][0]
    return "" if (request.prefill or "").count("{") > (request.prefill or "").count("}") else written


@pytest.fixture(scope="module")
def client() -> Iterator[OpenAI]:
    model = MockBackend(label="m1", fn=_replay, streaming=True, stream_chunk=3)
    with serve_app(create_app(model, model_name="sage")) as url:
        yield OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


@pytest.mark.parametrize("case", range(len(WRITTEN)))
def test_served_content_never_carries_tag_text(client: OpenAI, case: int) -> None:
    msgs = [{"role": "user", "content": f"case {case}"}]
    r = client.chat.completions.create(model="sage", messages=msgs)  # type: ignore[arg-type]
    content = r.choices[0].message.content or ""
    assert content == WRITTEN[case][1] and not TAG.search(content)
    sage = (r.choices[0].message.model_extra or {})["sage"]
    assert "a_" in sage["stray"] or "u_" in sage["stray"]  # kept apart, not lost
    pieces = [c.choices[0].delta.content or "" for c in
              client.chat.completions.create(model="sage", messages=msgs, stream=True)  # type: ignore[arg-type]
              if c.choices]
    assert "".join(pieces).strip() == WRITTEN[case][1]
    assert not any(TAG.search(p) for p in pieces)

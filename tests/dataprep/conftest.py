"""Fixtures of the data-preparation tests.

``scripted_llm`` is a named stand-in for an LLM: the tests' stub OpenAI-compatible HTTP server
(``tests.support.StubServer``, stopped after the test) whose ``/v1/chat/completions`` answers are
scripted per dialog by :func:`scripted_llm_script`. The dialog to annotate is the last user message
that starts with ``[0] ``; a marker word in its first turn picks the answer:

* ``VALID``: correct JSON at once;  ``FENCED``: correct JSON in a code fence with a trailing comma;
* ``BROKEN``: broken JSON first, correct after the repair request;
* ``WRONGCOUNT``: always one turn too few;  ``MISSING``: always lacks ``emotion`` on turn 0;
* ``MISSINGONCE``: lacks ``emotion`` first, correct after the repair request;
* ``NEARMISS``: assistant motivations spelled ``reflection of feeling`` (for closed sets);
* ``LONG``: cut off (``finish_reason: length``) while ``max_tokens`` < 300;
* ``GARBAGE``: never JSON;  ``HTTP500``: the server answers 500 (a server error, not an answer).
When the system prompt asks for ``text`` (tidy mode), assistant turns not ending in a question get
one added.
Everything else gets correct JSON. The server counts hits (``hits``) and keeps request bodies
(``bodies``); its URL is ``base_url``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import Call, Refusal, Reply, StubServer

_TURN = re.compile(r"^\[(\d+)\] (user|assistant): (.*)$", re.M)


def scripted_answer(body: dict[str, Any]) -> str:
    msgs = body["messages"]
    t_idx = max(i for i, m in enumerate(msgs) if m["role"] == "user" and m["content"].startswith("[0] "))
    turns = _TURN.findall(msgs[t_idx]["content"])
    attempt = 1 + sum(m["role"] == "assistant" for m in msgs[t_idx:])  # repair rounds so far
    tidy = '"text"' in msgs[0]["content"]
    marker = next((w for w in ("VALID", "FENCED", "BROKEN", "WRONGCOUNT", "MISSINGONCE", "MISSING", "NEARMISS",
                               "LONG", "GARBAGE") if w in turns[0][2]), "VALID")
    items = []
    for idx, role, text in turns:
        words = re.findall(r"[a-z]+", text.lower())
        item: dict[str, Any] = {
            "index": int(idx),
            "motivation": "sharing news" if role == "user" else ("reflection of feeling" if marker == "NEARMISS"
                                                                  else "Reflection of feelings"),
            "emotion": "Anxious!" if role == "user" else "calm",
            "topics": [words[-1] if words else "life"],
        }
        if tidy:
            item["text"] = text if role == "user" or text.endswith("?") else text + " How does that feel?"
        items.append(item)
    good = json.dumps({"turns": items})
    if marker == "FENCED":
        return "```json\n" + good[:-2] + ",]}\n```"
    if marker == "BROKEN":
        return good[: len(good) // 2] if attempt == 1 else good
    if marker == "WRONGCOUNT":
        return json.dumps({"turns": items[:-1]})
    if marker == "MISSING" or (marker == "MISSINGONCE" and attempt == 1):
        del items[0]["emotion"]
        return json.dumps({"turns": items})
    if marker == "LONG" and int(body.get("max_tokens") or 0) < 300:
        return good[:40]
    if marker == "GARBAGE":
        return "I would rather write a poem about " + turns[0][2]
    return good


def scripted_llm_script(call: Call) -> Reply | Refusal:
    """The stub's script: :func:`scripted_answer` for every choice; ``HTTP500`` dialogs get a 500."""
    if not call.chat:
        return Refusal(404, "not found")
    body = call.body
    if "HTTP500" in json.dumps(body["messages"]):
        return Refusal(500, "scripted server error", "server_error")
    text = scripted_answer(body)
    cut = "LONG" in json.dumps(body["messages"]) and int(body.get("max_tokens") or 0) < 300
    usage = {"prompt_tokens": 10, "completion_tokens": len(text) // 4, "total_tokens": 10 + len(text) // 4}
    return Reply([text] * call.n, finish_reason="length" if cut else "stop", usage=usage)


@pytest.fixture
def scripted_llm() -> Iterator[StubServer]:
    with StubServer(scripted_llm_script, model_id="scripted") as srv:
        yield srv

"""Fixtures of the data-preparation tests.

``scripted_llm`` is a named stand-in for an LLM: a small OpenAI-compatible HTTP server (stdlib
``http.server`` on 127.0.0.1, a free port, stopped after the test) whose ``/v1/chat/completions``
answers are scripted per dialog. The dialog to annotate is the last user message that starts with
``[0] ``; a marker word in its first turn picks the script:

* ``VALID``: correct JSON at once;  ``FENCED``: correct JSON in a code fence with a trailing comma;
* ``BROKEN``: broken JSON first, correct after the repair request;
* ``WRONGCOUNT``: always one turn too few;  ``MISSING``: always lacks ``emotion`` on turn 0;
* ``MISSINGONCE``: lacks ``emotion`` first, correct after the repair request;
* ``NEARMISS``: assistant motivations spelled ``reflection of feeling`` (for closed sets);
* ``LONG``: cut off (``finish_reason: length``) while ``max_tokens`` < 300;
* ``GARBAGE``: never JSON;  ``HTTP500``: the server answers 500 (a server error, not an answer).
When the system prompt asks for ``text`` (tidy mode), assistant turns not ending in a question get
one added.
Everything else gets correct JSON. The server counts hits and keeps request bodies.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

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


class ScriptedLLM:
    """A running scripted server: ``base_url``, ``hits`` (chat requests served) and ``bodies``."""

    def __init__(self) -> None:
        self.hits = 0
        self.bodies: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def _send(self, code: int, obj: Any) -> None:
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._send(200, {"object": "list", "data": [{"id": "scripted", "object": "model"}]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if not self.path.endswith("/chat/completions"):
                    self._send(404, {"error": {"message": "not found"}})
                    return
                with owner.lock:
                    owner.hits += 1
                    owner.bodies.append(body)
                if "HTTP500" in json.dumps(body["messages"]):
                    self._send(500, {"error": {"message": "scripted server error", "type": "server_error"}})
                    return
                text = scripted_answer(body)
                n = int(body.get("n") or 1)
                cut = "LONG" in json.dumps(body["messages"]) and int(body.get("max_tokens") or 0) < 300
                self._send(200, {
                    "id": f"cmpl-{owner.hits}", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "length" if cut else "stop"}
                                for i in range(n)],
                    "usage": {"prompt_tokens": 10, "completion_tokens": len(text) // 4, "total_tokens": 10 + len(text) // 4},
                })

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ScriptedLLM:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def scripted_llm() -> Iterator[ScriptedLLM]:
    with ScriptedLLM() as srv:
        yield srv

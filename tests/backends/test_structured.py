"""Structured output: ChatRequest.json_schema sent as response_format by the HTTP backend (checked
in the request body a scripted server received), the 400 fallback remembered per base URL, and
vLLM's guided decoding (in-process, skipped without vllm)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from sage_dialog.backends import BackendError, ChatRequest, SamplingParams, load_backend
from sage_dialog.backends.base import ChatStream
from sage_dialog.backends.openai_backend import SCHEMA_UNSUPPORTED, OpenAIBackend

SCHEMA = {
    "type": "object",
    "properties": {"motivation": {"type": "string", "enum": ["venting", "asking"]}},
    "required": ["motivation"],
}
MSGS = [{"role": "user", "content": "Tag this: i failed my exam"}]
FAST = {"backoff_base_s": 0.01, "backoff_max_s": 0.05, "timeout_s": 5.0}


class ScriptedServer:
    """A scripted OpenAI-compatible stand-in that records request bodies.

    ``reject_schema``: answer 400 to any request carrying ``response_format`` (as servers without
    structured output do). ``always_400``: answer 400 to everything.
    """

    def __init__(self, *, reject_schema: bool = False, always_400: bool = False):
        self.bodies: list[dict[str, Any]] = []
        self.reject_schema = reject_schema
        self.always_400 = always_400
        srv = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def _send(self, status: int, obj: dict[str, Any]) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                srv.bodies.append(body)
                if srv.always_400 or (srv.reject_schema and "response_format" in body):
                    self._send(400, {"error": {"message": "unknown field response_format"}})
                    return
                answer = json.dumps({"motivation": "venting"})
                if body.get("stream"):
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.close_connection = True
                    for piece, fin in ((answer[:10], None), (answer[10:], "stop")):
                        ch = {"index": 0, "delta": {"content": piece}, "finish_reason": fin}
                        chunk = {"id": "s", "object": "chat.completion.chunk", "created": 0, "model": "m"}
                        self.wfile.write(f"data: {json.dumps({**chunk, 'choices': [ch]})}\n\n".encode())
                    self.wfile.write(b"data: [DONE]\n\n")
                    return
                self._send(
                    200,
                    {
                        "id": "r",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body.get("model"),
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": answer},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
                    },
                )

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def req(**kw: Any) -> ChatRequest:
    return ChatRequest(
        MSGS, sampling=SamplingParams(temperature=0.0, max_tokens=20), json_schema=SCHEMA, **kw
    )


def test_schema_is_sent_as_response_format() -> None:
    with ScriptedServer() as srv:
        b = OpenAIBackend("m", base_url=srv.url, **FAST)
        [r] = asyncio.run(b.generate([req()]))
        assert json.loads(r.texts[0]) == {"motivation": "venting"}
        rf = srv.bodies[0]["response_format"]
        assert rf == {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": SCHEMA, "strict": False},
        }
        # streaming carries it too; a request with a prefill does not (the answer starts mid-document)
        s = b.stream(req())

        async def go(s: ChatStream) -> str:
            async with s:
                return "".join([p async for p in s])

        assert json.loads(asyncio.run(go(s))) == {"motivation": "venting"}
        assert srv.bodies[1]["stream"] is True and srv.bodies[1]["response_format"] == rf
        asyncio.run(b.generate([req(prefill="{")]))
        assert "response_format" not in srv.bodies[2]
        # no schema, no response_format
        asyncio.run(b.generate([ChatRequest(MSGS)]))
        assert "response_format" not in srv.bodies[3]


def test_400_falls_back_once_and_is_remembered_per_base_url() -> None:
    with ScriptedServer(reject_schema=True) as srv, ScriptedServer() as good:
        b = OpenAIBackend("m", base_url=srv.url, max_retries=3, **FAST)
        [r] = asyncio.run(b.generate([req()]))
        assert json.loads(r.texts[0]) == {"motivation": "venting"}
        assert ["response_format" in x for x in srv.bodies] == [True, False]
        assert srv.url in SCHEMA_UNSUPPORTED
        # later requests, from this or another backend object, go to that URL without it at once
        asyncio.run(b.generate([req(), req()]))
        b2 = OpenAIBackend("other", base_url=srv.url, **FAST)
        asyncio.run(b2.generate([req()]))
        assert ["response_format" in x for x in srv.bodies] == [True, False, False, False, False]
        # ...while a server that supports it still gets it
        asyncio.run(OpenAIBackend("m", base_url=good.url, **FAST).generate([req()]))
        assert "response_format" in good.bodies[0] and good.url not in SCHEMA_UNSUPPORTED


def test_400_unrelated_to_the_schema_is_not_blamed_on_it() -> None:
    with ScriptedServer(always_400=True) as srv:
        b = OpenAIBackend("m", base_url=srv.url, max_retries=3, **FAST)
        with pytest.raises(BackendError) as e:
            asyncio.run(b.generate([req()]))
        assert e.value.kind == "bad_request"
        assert len(srv.bodies) == 2  # with the schema, once without, then no retries
        assert srv.url not in SCHEMA_UNSUPPORTED


@pytest.mark.vllm
@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed")
def test_vllm_guided_json_decoding(tiny_model) -> None:
    """Guided output is compact JSON, so a random model cannot spend ``max_tokens`` on whitespace.

    Deterministic although per-request seeds are off on the CPU build: with no free whitespace the
    only choice left in this schema is the enum value, so every sample is one of two exact strings,
    and the unconstrained baseline is greedy.
    """
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    b = load_backend(f"vllm:{tiny_model}", max_model_len=512, dtype="float32")
    try:
        hot = SamplingParams(temperature=1.0, max_tokens=40)
        [free, guided, greedy] = asyncio.run(
            b.generate(
                [
                    ChatRequest(MSGS, n=1, sampling=SamplingParams(temperature=0.0, max_tokens=40)),
                    ChatRequest(MSGS, n=8, sampling=hot, json_schema=SCHEMA),
                    ChatRequest(
                        MSGS, n=1, sampling=SamplingParams(temperature=0.0, max_tokens=40), json_schema=SCHEMA
                    ),
                ]
            )
        )
        # random weights: unconstrained text is not JSON, constrained text follows the schema
        assert not _is_answer(free.texts[0])
        compact = {'{"motivation":"venting"}', '{"motivation":"asking"}'}
        for c in [*guided.completions, *greedy.completions]:
            assert c.text in compact and c.finish_reason == "stop", (c.text, c.finish_reason)
    finally:
        asyncio.run(b.aclose())


def _is_answer(text: str) -> bool:
    try:
        obj = json.loads(text)
    except ValueError:
        return False
    return isinstance(obj, dict) and obj.get("motivation") in ("venting", "asking")

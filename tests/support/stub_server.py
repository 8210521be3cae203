"""One scripted OpenAI-compatible HTTP server for the tests (stdlib ``http.server`` on 127.0.0.1, a
free port, its own thread).

It answers ``POST .../chat/completions`` and ``.../completions`` (streamed or not) from a *script*: a
function of the request (:class:`Call`) that returns a :class:`Reply` (the texts of the choices,
their finish reason, usage) or a :class:`Refusal` (an HTTP error with an OpenAI-style body). The
default script, :func:`hashed_words`, answers every request with words that are a deterministic
function of the request (honouring ``n`` and ``max_tokens``, ``finish_reason: "length"``). The server
records what it got (``hits``, ``bodies``, ``auth_headers``) so tests can check what was sent.
``GET .../models`` lists ``model_id``; any other ``GET`` answers ``{"status": "ok"}``.

For the HTTP backend's fault tests it also fails on purpose, at set ``rates``: ``429`` with
``Retry-After``, ``5xx``, ``400``, a timeout (holds the connection, then drops it), malformed JSON,
or a truncated body / stream; ``counts`` says what it did, so tests can check that nothing was
dropped silently. With ``drip_s`` every healthy reply arrives one byte (a stream: one piece) at a
time, ``drip_s`` seconds apart (a slow-loris server). With ``echo_key_status`` it answers every
request with that status and a body that echoes the caller's API key (as careless servers do)::

    with StubServer(rates={"429": 0.06, "500": 0.06, "timeout": 0.06, "malformed": 0.06,
                           "truncated": 0.06}) as srv:
        srv.base_url  # http://127.0.0.1:PORT/v1
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FAULTS = ("429", "500", "timeout", "malformed", "truncated", "400")


@dataclass
class Call:
    """One completion request, as a script sees it."""

    path: str
    body: dict[str, Any]
    n: int  # choices to answer (1 when the server ignores ``n``)
    hit: int  # 1 for the first completion request the server got, 2 for the next, ...

    @property
    def chat(self) -> bool:
        return self.path.rstrip("/").endswith("/chat/completions")

    def prompt(self) -> str:
        """The messages (chat) or the prompt (completions), as canonical JSON."""
        return json.dumps(self.body.get("messages") if self.chat else self.body.get("prompt"), sort_keys=True)


@dataclass
class Reply:
    """A healthy answer: one text per choice; ``usage`` defaults to word counts."""

    texts: list[str]
    finish_reason: str = "stop"
    usage: dict[str, int] | None = None


@dataclass
class Refusal:
    """An HTTP error answer: ``{"error": {"message": ..., "type": ...}}`` (``type`` left out when None)."""

    status: int
    message: str
    type: str | None = None


Script = Callable[[Call], "Reply | Refusal"]


def hashed_words(call: Call) -> Reply:
    """The default script: up to 8 words per choice, a hash of (prompt, seed, choice index)."""
    prompt = call.prompt()
    max_tokens = int(call.body.get("max_tokens") or 16)
    texts = [_fake_text(prompt, call.body.get("seed"), i, max_tokens) for i in range(call.n)]
    return Reply(texts, finish_reason="length")


def _fake_text(prompt: str, seed: Any, i: int, max_tokens: int) -> str:
    h = hashlib.sha256(f"{prompt}|{seed}|{i}".encode()).hexdigest()
    words = [h[k : k + 4] for k in range(0, min(len(h), 4 * max(1, min(max_tokens, 8))), 4)]
    return " ".join(words)


class StubServer:
    """The server; a context manager (or :meth:`start` / :meth:`stop`)."""

    def __init__(
        self,
        script: Script = hashed_words,
        *,
        model_id: str = "stub-model",
        rates: dict[str, float] | None = None,
        seed: int = 0,
        retry_after: str = "0.05",
        hang_s: float = 1.0,
        delay_s: float = 0.0,
        ignore_n: bool = False,
        echo_key_status: int | None = None,
        drip_s: float = 0.0,
    ):
        self.script = script
        self.model_id = model_id
        self.rates = dict(rates or {})
        unknown = set(self.rates) - set(FAULTS)
        assert not unknown, f"unknown fault kinds {unknown}"
        assert sum(self.rates.values()) <= 1.0
        self.rng = random.Random(seed)
        self.retry_after = retry_after
        self.hang_s = hang_s
        self.delay_s = delay_s
        self.ignore_n = ignore_n
        # a careless server: answer every POST with this status and the caller's key in the body
        self.echo_key_status = echo_key_status
        # a slow-loris server: healthy replies arrive one byte every drip_s seconds
        self.drip_s = drip_s
        self.hits = 0  # completion requests received
        self.bodies: list[dict[str, Any]] = []  # their bodies, in order
        self.counts: Counter[str] = Counter()  # per request: the fault injected, or "ok"
        self.auth_headers: set[str] = set()
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> StubServer:
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> StubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def pick_fault(self) -> str | None:
        with self.lock:
            x = self.rng.random()
        acc = 0.0
        for kind in FAULTS:
            acc += self.rates.get(kind, 0.0)
            if x < acc:
                return kind
        return None

    # -- the handler -----------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        srv = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                if srv.drip_s and status == 200:
                    self._drip(body)
                    return
                self.wfile.write(body)

            def _drip(self, body: bytes) -> None:
                """One byte every ``drip_s`` seconds (each read of the client succeeds), until the
                client hangs up or the server stops."""
                try:
                    for i in range(len(body)):
                        self.wfile.write(body[i:i + 1])
                        self.wfile.flush()
                        if srv._stop.wait(srv.drip_s):
                            break
                except OSError:  # the client gave up: what the test wants
                    with srv.lock:
                        srv.counts["drip_abandoned"] += 1
                self.close_connection = True

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    models = {"object": "list", "data": [{"id": srv.model_id, "object": "model"}]}
                    self._send(200, json.dumps(models).encode())
                else:
                    self._send(200, b'{"status":"ok"}')

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                if not self.path.rstrip("/").endswith("/completions"):
                    self._send(404, b'{"error":{"message":"not found"}}')
                    return
                with srv.lock:
                    srv.auth_headers.add(self.headers.get("Authorization", ""))
                    srv.hits += 1
                    srv.bodies.append(body)
                    hit = srv.hits
                if srv.echo_key_status is not None:
                    key = self.headers.get("Authorization", "").removeprefix("Bearer ")
                    msg = f"Incorrect API key provided: {key}. Find your key at https://example.invalid"
                    self._send(srv.echo_key_status, json.dumps({"error": {"message": msg, "key": key}}).encode())
                    return
                if srv.delay_s:
                    time.sleep(srv.delay_s)
                fault = srv.pick_fault()
                with srv.lock:
                    srv.counts[fault or "ok"] += 1
                stream = bool(body.get("stream"))
                if fault == "429":
                    self._send(
                        429,
                        b'{"error":{"message":"slow down","type":"rate_limit"}}',
                        {"Retry-After": srv.retry_after},
                    )
                elif fault == "400":
                    self._send(400, b'{"error":{"message":"bad request: unknown field"}}')
                elif fault == "500":
                    self._send(srv.rng.choice([500, 502, 503]), b'{"error":{"message":"boom"}}')
                elif fault == "timeout":
                    srv._stop.wait(srv.hang_s)  # the client gives up first
                    self.close_connection = True
                elif fault == "malformed":
                    self._send(200, b'{"id": "x", "choices": [{"index": 0, "mess')
                elif fault == "truncated" and not stream:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", "4000")
                    self.end_headers()
                    self.wfile.write(b'{"id": "x", "choices": [')
                    self.wfile.flush()
                    self.close_connection = True
                else:
                    n = 1 if srv.ignore_n else int(body.get("n") or 1)
                    call = Call(self.path, body, n, hit)
                    self._answer(call, srv.script(call), truncate=fault == "truncated")

            def _answer(self, call: Call, reply: Reply | Refusal, truncate: bool) -> None:
                if isinstance(reply, Refusal):
                    err: dict[str, Any] = {"message": reply.message}
                    if reply.type is not None:
                        err["type"] = reply.type
                    self._send(reply.status, json.dumps({"error": err}).encode())
                    return
                usage = reply.usage
                if usage is None:
                    words_in = len(call.prompt().split())
                    words_out = sum(len(t.split()) for t in reply.texts)
                    usage = {"prompt_tokens": words_in, "completion_tokens": words_out,
                             "total_tokens": words_in + words_out}
                if call.body.get("stream"):
                    self._stream(call, reply, usage, truncate)
                    return
                if call.chat:
                    choices = [
                        {
                            "index": i,
                            "message": {"role": "assistant", "content": t},
                            "finish_reason": reply.finish_reason,
                        }
                        for i, t in enumerate(reply.texts)
                    ]
                    obj = "chat.completion"
                else:
                    choices = [
                        {"index": i, "text": t, "finish_reason": reply.finish_reason}
                        for i, t in enumerate(reply.texts)
                    ]
                    obj = "text_completion"
                out = {
                    "id": f"cmpl-{call.hit}",
                    "object": obj,
                    "created": 0,
                    "model": call.body.get("model"),
                    "choices": choices,
                    "usage": usage,
                }
                self._send(200, json.dumps(out).encode())

            def _stream(self, call: Call, reply: Reply, usage: dict[str, int], truncate: bool) -> None:
                """Word by word, a finish chunk per choice, a usage chunk, ``[DONE]``; ``truncate``
                closes the connection halfway through the first choice."""
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True

                def emit(obj: dict[str, Any]) -> None:
                    self.wfile.write(f"data: {json.dumps(obj)}\n\n".encode())
                    if srv.drip_s:  # a stream that never stalls long enough to time out a read
                        self.wfile.flush()
                        srv._stop.wait(srv.drip_s)

                base = {"id": f"cmpl-{call.hit}", "object": "chat.completion.chunk", "created": 0, "model": "m"}
                for i, t in enumerate(reply.texts):
                    words = t.split(" ")
                    for j, w in enumerate(words):
                        piece = w if j == 0 else " " + w
                        emit(
                            {
                                **base,
                                "choices": [{"index": i, "delta": {"content": piece}, "finish_reason": None}],
                            }
                        )
                        if truncate and j == len(words) // 2:
                            self.wfile.flush()
                            return  # connection closes mid-stream: no finish_reason, no [DONE]
                    emit({**base, "choices": [{"index": i, "delta": {}, "finish_reason": reply.finish_reason}]})
                emit({**base, "choices": [], "usage": usage})
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()

        return Handler

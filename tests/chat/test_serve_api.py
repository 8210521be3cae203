"""The server's OpenAI surface through the real openai SDK against the real app on 127.0.0.1.

The model is a scripted SAC writer (a clearly named stand-in for a trained model: it writes fixed tags
then a reply, continuing any prefill, one token per word) so the text carries real tag blocks, which a
random tiny model never writes; the server, uvicorn, HTTP and the SDK are all real. Each case in
``hostile_requests.jsonl`` is one abusive request with the status and message it must get.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import BadRequestError, NotFoundError, OpenAI

from sage_dialog.backends.base import Backend, ChatRequest, ChatResult, ChatStream, Completion
from sage_dialog.interact.serve import ServeLimits, create_app

STATE = "{u_motivation: sharing news, u_emotion: happy, u_topic: [exam]}"
ACTION = "{a_motivation: praise, a_emotion: happy, a_topic: [exam]}"
REPLY = "That is wonderful news, well done on the exam!"
FULL = f"{STATE} {ACTION} {REPLY}"
CASES = Path(__file__).parent / "hostile_requests.jsonl"


class ScriptedSacModel(Backend):
    """Continues ``FULL`` from the prefill; a token is a word (so ``max_tokens`` cuts by words)."""

    provider = "scripted"
    supports_json_schema = True

    def __init__(self, delay_s: float = 0.0) -> None:
        super().__init__("sac")
        self.requests: list[ChatRequest] = []
        self.delay_s = delay_s
        self.cancelled = 0

    def _continue(self, r: ChatRequest) -> Completion:
        pre = r.prefill or ""
        if r.json_schema is not None:
            text = json.dumps({"answer": REPLY})
        elif FULL.startswith(pre):
            text = FULL[len(pre) :]
        elif pre.endswith("} "):
            text = REPLY
        else:
            text = "a_topic: [exam]} more"
        for s in r.sampling.stop:
            text = text.split(s, 1)[0]
        words = text.split(" ")
        cut = len(words) > r.sampling.max_tokens
        return Completion(
            " ".join(words[: r.sampling.max_tokens]),
            "length" if cut else "stop",
            min(len(words), r.sampling.max_tokens),
        )

    async def generate(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        self.requests.extend(requests)
        try:
            await asyncio.sleep(self.delay_s)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return [ChatResult([self._continue(r) for _ in range(r.n)], tokens_in=7) for r in requests]

    async def _stream(self, request: ChatRequest, out: ChatStream) -> AsyncIterator[str]:
        comp = self._continue(request)
        out.tokens_in = 7
        out.completion = comp
        for w in comp.text.split(" "):
            yield w + " "


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(app: Any) -> Iterator[str]:
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 20
    while not server.started:
        assert time.time() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def scripted() -> ScriptedSacModel:
    return ScriptedSacModel()


@pytest.fixture(scope="module")
def base(scripted: ScriptedSacModel) -> Iterator[str]:
    limits = ServeLimits(max_request_bytes=20_000, max_prompt_tokens=500, max_completion_tokens=64)
    yield from _start(create_app(scripted, model_name="sage", limits=limits))


def _client(base: str) -> OpenAI:
    return OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)


def test_small_max_tokens_bounds_the_reply_not_the_latent(base: str) -> None:
    r = _client(base).chat.completions.create(
        model="sage", messages=[{"role": "user", "content": "I passed my exam!"}], max_tokens=3
    )
    msg = r.choices[0].message
    sage = (msg.model_extra or {})["sage"]
    assert msg.content == "That is wonderful"  # three "tokens" of the reply, not of the tag block
    assert sage["state"] == {"motivation": "sharing news", "emotion": "happy", "topics": ["exam"]}
    assert sage["action"]["motivation"] == "praise"
    assert r.choices[0].finish_reason == "length"


def test_small_max_tokens_streamed(base: str) -> None:
    chunks = list(
        _client(base).chat.completions.create(
            model="sage",
            messages=[{"role": "user", "content": "I passed my exam!"}],
            max_tokens=2,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip() == "That is"
    assert "{" not in text
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 7


def test_response_format_goes_to_the_structured_mode(base: str, scripted: ScriptedSacModel) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    r = _client(base).chat.completions.create(
        model="sage",
        messages=[{"role": "user", "content": "answer in JSON"}],
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}},
    )
    assert json.loads(r.choices[0].message.content or "") == {"answer": REPLY}
    assert scripted.requests[-1].json_schema == schema
    with pytest.raises(BadRequestError, match="sage_steer"):
        _client(base).chat.completions.create(
            model="sage",
            messages=[{"role": "user", "content": "x"}],
            response_format={"type": "json_object"},
            extra_body={"sage_steer": {"a_emotion": "happy"}},
        )


def test_models_retrieve_and_completions(base: str) -> None:
    client = _client(base)
    assert client.models.retrieve("sage").id == "sage"
    with pytest.raises(NotFoundError):
        client.models.retrieve("gpt-4")
    r = client.completions.create(model="sage", prompt="I passed my exam!", max_tokens=4)
    assert r.choices[0].text == "That is wonderful news,"
    assert r.usage is not None and r.usage.prompt_tokens == 7


def test_unsupported_features_are_refused_not_ignored(base: str) -> None:
    client = _client(base)
    user = [{"role": "user", "content": "hi"}]
    with pytest.raises(BadRequestError, match="logprobs"):  # the scripted model has no token logprobs
        client.chat.completions.create(model="sage", messages=user, logprobs=True)  # type: ignore[arg-type]
    with pytest.raises(BadRequestError, match="tool calling"):
        client.chat.completions.create(
            model="sage",
            messages=user,  # type: ignore[arg-type]
            tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        )
    with pytest.raises(BadRequestError, match="presence_penalty"):
        client.chat.completions.create(model="sage", messages=user, presence_penalty=0.5)  # type: ignore[arg-type]


def _cases() -> list[dict[str, Any]]:
    return [json.loads(line) for line in CASES.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("case", _cases(), ids=lambda c: c["name"])
def test_hostile_request(base: str, case: dict[str, Any]) -> None:
    if "body_b64" in case:
        body = base64.b64decode(case["body_b64"])
    elif "body_repeat" in case:  # {"text": ..., "times": N}: a long message in an otherwise fine request
        text = case["body_repeat"]["text"] * case["body_repeat"]["times"]
        body = json.dumps({"model": "sage", "messages": [{"role": "user", "content": text}]}).encode()
    else:
        body = case["body"].encode()
    r = httpx.post(f"{base}/v1/{case.get('endpoint', 'chat/completions')}", content=body, timeout=30)
    assert r.status_code == case["status"], r.text
    err = r.json()["error"]
    assert case["says"] in err["message"]
    assert "Traceback" not in r.text

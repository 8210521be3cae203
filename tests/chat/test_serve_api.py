"""The server's OpenAI surface through the real openai SDK against the real app on 127.0.0.1.

The model is the ``mock:`` backend scripted as a SAC writer (a stand-in for a trained model: it writes
fixed tags then a reply, continuing any prefill, one token per word) so the text carries real tag blocks, which a
random tiny model never writes; the server, uvicorn, HTTP and the SDK are all real. Each case in
``hostile_requests.jsonl`` is one abusive request with the status and message it must get.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import BadRequestError, NotFoundError, OpenAI

from sage_dialog.backends.base import ChatRequest
from sage_dialog.backends.mock import MockBackend
from sage_dialog.interact.serve import create_app
from sage_dialog.interact.serve_limits import ServeLimits
from tests.support import serve_app

STATE = "{u_motivation: sharing news, u_emotion: happy, u_topic: [exam]}"
ACTION = "{a_motivation: praise, a_emotion: happy, a_topic: [exam]}"
REPLY = "That is wonderful news, well done on the exam!"
FULL = f"{STATE} {ACTION} {REPLY}"
CASES = Path(__file__).parent / "hostile_requests.jsonl"


def _continue_full(request: ChatRequest, index: int) -> str:
    """A stand-in for a trained SAC model: continues ``FULL`` from the prefill (mock: counts words)."""
    pre = request.prefill or ""
    if request.json_schema is not None:
        return json.dumps({"answer": REPLY})
    if FULL.startswith(pre):
        return FULL[len(pre) :]
    if pre.endswith("} "):
        return REPLY
    return "a_topic: [exam]} more"


def scripted_sac_model() -> MockBackend:
    m = MockBackend(label="sac", fn=_continue_full, streaming=True)
    m.supports_json_schema = True  # type: ignore[attr-defined]  # as vllm:/openai: structured modes
    return m


@pytest.fixture(scope="module")
def scripted() -> MockBackend:
    return scripted_sac_model()


@pytest.fixture(scope="module")
def base(scripted: MockBackend) -> Iterator[str]:
    limits = ServeLimits(max_request_bytes=20_000, max_prompt_tokens=500, max_completion_tokens=64)
    with serve_app(create_app(scripted, model_name="sage", limits=limits)) as url:
        yield url


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
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens > 0


def test_response_format_goes_to_the_structured_mode(base: str, scripted: MockBackend) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    r = _client(base).chat.completions.create(
        model="sage",
        messages=[{"role": "user", "content": "answer in JSON"}],
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}},
    )
    assert json.loads(r.choices[0].message.content or "") == {"answer": REPLY}
    assert scripted.history[-1].json_schema == schema
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
    assert r.usage is not None and r.usage.prompt_tokens > 0


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


def test_cli_defaults_are_the_servers() -> None:
    from sage_dialog.commands.serve import LIMIT_DEFAULTS

    d = ServeLimits()
    for name in ServeLimits.__dataclass_fields__:
        assert getattr(LIMIT_DEFAULTS, name) == getattr(d, name), name


def test_lm_eval_local_chat_completions_against_serve(base: str) -> None:
    """lm-eval's API model (which needs tenacity, in the eval extra) talks to serve out of the box."""
    pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance
    from lm_eval.models.api_models import JsonChatStr
    from lm_eval.models.openai_completions import LocalChatCompletion

    lm = LocalChatCompletion(base_url=f"{base}/v1/chat/completions", model="sage", max_retries=1)
    msgs = [{"role": "user", "content": "I passed my exam!"}]
    req = Instance(
        "generate_until",
        doc={},
        arguments=(JsonChatStr(json.dumps(msgs)), {"until": ["!"], "max_gen_toks": 20}),
        idx=0,
    )
    assert lm.generate_until([req], disable_tqdm=True) == ["That is wonderful news, well done on the exam"]


def test_a_returned_message_goes_back_into_the_history_as_it_is(base: str) -> None:
    """A returned message dumped whole (``message.model_dump()``, as litellm-style clients keep
    history) carries ``refusal``, ``tool_calls``, ``audio``... as null: accepted, not 400."""
    client = _client(base)
    msgs: list[Any] = [{"role": "user", "content": "I passed my exam!"}]
    r = client.chat.completions.create(model="sage", messages=msgs, max_tokens=3)
    msgs += [r.choices[0].message.model_dump(), {"role": "user", "content": "thanks"}]
    r2 = client.chat.completions.create(model="sage", messages=msgs, max_tokens=3)
    assert r2.choices[0].message.content

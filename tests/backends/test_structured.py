"""Structured output: ChatRequest.json_schema sent as response_format by the HTTP backend (checked
in the request body a scripted server received), the 400 fallback remembered per base URL, and
vLLM's guided decoding (in-process, skipped without vllm)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
from typing import Any

import pytest

from sage_dialog.backends import BackendError, ChatRequest, SamplingParams, load_backend
from sage_dialog.backends.base import ChatStream
from sage_dialog.backends.openai_backend import SCHEMA_UNSUPPORTED, OpenAIBackend
from tests.support import Call, Refusal, Reply, StubServer

SCHEMA = {
    "type": "object",
    "properties": {"motivation": {"type": "string", "enum": ["venting", "asking"]}},
    "required": ["motivation"],
}
MSGS = [{"role": "user", "content": "Tag this: i failed my exam"}]
FAST = {"backoff_base_s": 0.01, "backoff_max_s": 0.05, "timeout_s": 5.0}


ANSWER = json.dumps({"motivation": "venting"})


def scripted_server(*, reject_schema: bool = False, always_400: bool = False) -> StubServer:
    """A scripted OpenAI-compatible stand-in that records request bodies and answers ``ANSWER``.

    ``reject_schema``: answer 400 to any request carrying ``response_format`` (as servers without
    structured output do). ``always_400``: answer 400 to everything.
    """

    def script(call: Call) -> Reply | Refusal:
        if always_400 or (reject_schema and "response_format" in call.body):
            return Refusal(400, "unknown field response_format")
        return Reply([ANSWER], usage={"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8})

    return StubServer(script)


def req(**kw: Any) -> ChatRequest:
    return ChatRequest(
        MSGS, sampling=SamplingParams(temperature=0.0, max_tokens=20), json_schema=SCHEMA, **kw
    )


def test_schema_is_sent_as_response_format() -> None:
    with scripted_server() as srv:
        b = OpenAIBackend("m", base_url=srv.base_url, **FAST)
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
    with scripted_server(reject_schema=True) as srv, scripted_server() as good:
        b = OpenAIBackend("m", base_url=srv.base_url, max_retries=3, **FAST)
        [r] = asyncio.run(b.generate([req()]))
        assert json.loads(r.texts[0]) == {"motivation": "venting"}
        assert ["response_format" in x for x in srv.bodies] == [True, False]
        assert srv.base_url in SCHEMA_UNSUPPORTED
        # later requests, from this or another backend object, go to that URL without it at once
        asyncio.run(b.generate([req(), req()]))
        b2 = OpenAIBackend("other", base_url=srv.base_url, **FAST)
        asyncio.run(b2.generate([req()]))
        assert ["response_format" in x for x in srv.bodies] == [True, False, False, False, False]
        # ...while a server that supports it still gets it
        asyncio.run(OpenAIBackend("m", base_url=good.base_url, **FAST).generate([req()]))
        assert "response_format" in good.bodies[0] and good.base_url not in SCHEMA_UNSUPPORTED


def test_400_unrelated_to_the_schema_is_not_blamed_on_it() -> None:
    with scripted_server(always_400=True) as srv:
        b = OpenAIBackend("m", base_url=srv.base_url, max_retries=3, **FAST)
        with pytest.raises(BackendError) as e:
            asyncio.run(b.generate([req()]))
        assert e.value.kind == "bad_request"
        assert len(srv.bodies) == 2  # with the schema, once without, then no retries
        assert srv.base_url not in SCHEMA_UNSUPPORTED


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

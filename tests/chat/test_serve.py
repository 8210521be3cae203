"""`sage-dialog serve` as a real process on loopback, with the openai SDK as the client."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import APIStatusError, AuthenticationError, OpenAI

from tests.support import start_process

TOKEN = "t0ken-for-tests-only"
pytestmark = pytest.mark.slow  # starts a server process with a model (~20 s on a busy 2-core box)


@pytest.fixture(scope="module")
def server(tiny_model: Path) -> Iterator[tuple[str, str, subprocess.Popen[str]]]:
    spec = f"hf:{tiny_model}"
    args = ["serve", "--model", spec, "--max-tokens", "16", "--served-name", "sage-tiny", "--seed", "0"]
    with start_process(args, env={"HF_HUB_OFFLINE": "1", "SAGE_DIALOG_SERVE_TOKEN": TOKEN}) as served:
        yield served.base, spec, served.proc
    log = served.output()
    assert "401" in log  # the refusals were logged...
    assert TOKEN not in log  # ...but never the token
    assert "Logging error" not in log and "Traceback" not in log  # every access line formats


def test_token_required(server) -> None:
    base, _, _ = server
    bad = OpenAI(base_url=f"{base}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(AuthenticationError) as e:
        bad.chat.completions.create(model="sage-tiny", messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 401
    assert httpx.get(f"{base}/v1/models").status_code == 401  # no header at all
    assert httpx.get(f"{base}/health").status_code == 200


def test_models_and_plain_completion(server) -> None:
    base, _, _ = server
    client = OpenAI(base_url=f"{base}/v1", api_key=TOKEN, max_retries=0)
    assert [m.id for m in client.models.list().data] == ["sage-tiny"]
    r = client.chat.completions.create(
        model="sage-tiny", messages=[{"role": "user", "content": "I failed my exam"}], n=2, max_tokens=8
    )
    assert len(r.choices) == 2
    for ch in r.choices:
        assert isinstance(ch.message.content, str)
        assert "sage" in (ch.message.model_extra or {})
    assert r.usage is not None and r.usage.prompt_tokens > 0


def test_steered_completion_tags_removed_and_returned(server) -> None:
    base, _, _ = server
    client = OpenAI(base_url=f"{base}/v1", api_key=TOKEN, max_retries=0)
    steer = {"a_motivation": "joke", "a_emotion": "playful", "a_topic": ["exam"]}
    r = client.chat.completions.create(
        model="sage-tiny",
        messages=[{"role": "user", "content": "I failed my exam"}],
        extra_body={"sage_steer": steer},
    )
    msg = r.choices[0].message
    sage = (msg.model_extra or {})["sage"]
    assert sage["action"] == {"motivation": "joke", "emotion": "playful", "topics": ["exam"]}
    assert "a_motivation" not in (msg.content or "")
    # the returned latent goes back into the history as tags; the next request still works
    r2 = client.chat.completions.create(
        model="sage-tiny",
        messages=[
            {"role": "user", "content": "I failed my exam"},
            {"role": "assistant", "content": msg.content, "sage": sage},
            {"role": "user", "content": "thanks"},
        ],
    )
    assert r2.choices[0].message.content is not None


def test_streaming(server) -> None:
    base, _, _ = server
    client = OpenAI(base_url=f"{base}/v1", api_key=TOKEN, max_retries=0)
    stream = client.chat.completions.create(
        model="sage-tiny",
        messages=[{"role": "user", "content": "I failed my exam"}],
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"sage_steer": {"a_motivation": "joke", "a_emotion": "playful", "a_topic": "exam"}},
    )
    chunks = list(stream)
    latents = [(c.choices[0].delta.model_extra or {}).get("sage") for c in chunks if c.choices]
    latents = [x for x in latents if x]
    assert latents and latents[0]["action"]["emotion"] == "playful"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "a_emotion" not in text
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals in (["stop"], ["length"])
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 0


def test_bad_requests(server) -> None:
    base, _, _ = server
    client = OpenAI(base_url=f"{base}/v1", api_key=TOKEN, max_retries=0)
    with pytest.raises(APIStatusError) as e:
        client.chat.completions.create(
            model="sage-tiny",
            messages=[{"role": "user", "content": "x"}],
            extra_body={"sage_steer": {"mood": "x"}},
        )
    assert e.value.status_code == 400 and "mood" in str(e.value)
    with pytest.raises(APIStatusError) as e:
        client.chat.completions.create(model="other", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 404


def test_streaming_several_choices(server) -> None:
    base, _, _ = server
    client = OpenAI(base_url=f"{base}/v1", api_key=TOKEN, max_retries=0)
    chunks = list(
        client.chat.completions.create(
            model="sage-tiny", messages=[{"role": "user", "content": "hi"}], stream=True, n=2, max_tokens=6
        )
    )
    indexes = {c.choices[0].index for c in chunks if c.choices}
    assert indexes == {0, 1}
    assert sum(1 for c in chunks if c.choices and c.choices[0].finish_reason) == 2


def test_streamed_usage_counts_the_prompt(server) -> None:
    base, _, _ = server
    client = OpenAI(base_url=f"{base}/v1", api_key=TOKEN, max_retries=0)
    msgs = [{"role": "user", "content": "I failed my exam"}]
    plain = client.chat.completions.create(model="sage-tiny", messages=msgs, max_tokens=4)  # type: ignore[arg-type]
    chunks = list(
        client.chat.completions.create(
            model="sage-tiny",
            messages=msgs,  # type: ignore[arg-type]
            max_tokens=4,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert plain.usage is not None and chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == plain.usage.prompt_tokens > 0


def test_openai_sdk_surface(server) -> None:
    """models.retrieve, the legacy completions endpoint, structured replies, and 400s for what hf cannot do."""
    base, _, _ = server
    client = OpenAI(base_url=f"{base}/v1", api_key=TOKEN, max_retries=0)
    assert client.models.retrieve("sage-tiny").id == "sage-tiny"
    r = client.completions.create(model="sage-tiny", prompt="I failed my exam", max_tokens=3)
    assert isinstance(r.choices[0].text, str) and r.usage is not None and r.usage.prompt_tokens > 0
    user = [{"role": "user", "content": "hi"}]
    # hf: has a structured mode (xgrammar): the random tiny model's reply is JSON of the schema anyway
    schema = {"type": "object", "properties": {"mood": {"enum": ["calm", "tense"]}}, "required": ["mood"]}
    r2 = client.chat.completions.create(
        model="sage-tiny",
        messages=user,  # type: ignore[arg-type]
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}},
        max_tokens=32,
    )
    assert json.loads(r2.choices[0].message.content or "")["mood"] in ("calm", "tense")
    with pytest.raises(APIStatusError) as e:
        client.chat.completions.create(
            model="sage-tiny", messages=user, tools=[{"type": "function", "function": {"name": "f"}}]
        )  # type: ignore[arg-type,list-item]
    assert e.value.status_code == 400 and "tool" in str(e.value)


def test_logprobs_of_the_reply(server) -> None:
    """logprobs / top_logprobs come from the hf backend's own distribution, for the reply's tokens."""
    base, _, _ = server
    client = OpenAI(base_url=f"{base}/v1", api_key=TOKEN, max_retries=0)
    user = [{"role": "user", "content": "I failed my exam"}]
    r = client.chat.completions.create(
        model="sage-tiny",
        messages=user,
        max_tokens=4,
        temperature=0,
        logprobs=True,
        top_logprobs=2,  # type: ignore[arg-type]
    )
    ch = r.choices[0]
    assert ch.logprobs is not None and ch.logprobs.content
    assert len(ch.logprobs.content) <= 4
    for tok in ch.logprobs.content:
        assert tok.logprob <= 0 and len(tok.top_logprobs) == 2
        assert (
            abs(tok.logprob - tok.top_logprobs[0].logprob) < 1e-4
        )  # greedy: the chosen token is the top one
    assert "".join(t.token for t in ch.logprobs.content).strip() == ch.message.content
    chunks = list(
        client.chat.completions.create(
            model="sage-tiny",
            messages=user,
            max_tokens=4,
            logprobs=True,
            stream=True,  # type: ignore[arg-type]
        )
    )
    assert any(c.choices and c.choices[0].logprobs and c.choices[0].logprobs.content for c in chunks)
    legacy = client.completions.create(model="sage-tiny", prompt="I failed my exam", max_tokens=3, logprobs=1)
    lp = legacy.choices[0].logprobs
    assert lp is not None and lp.token_logprobs and all(x <= 0 for x in lp.token_logprobs)

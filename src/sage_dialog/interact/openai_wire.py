"""The OpenAI wire schema of ``sage-dialog serve``: the request models, their one validator, the
mapping between wire messages and SAC history, and the JSON shapes of the replies.

Every request body goes through :func:`parse_request` (:class:`ChatCompletionRequest` /
:class:`CompletionRequest`, pydantic, strict): a field out of range, of the wrong type, or one this
server cannot honour (``tools``, a non-zero ``presence_penalty``, ``logit_bias``, an unknown field)
is a :class:`RequestRefused` (an OpenAI-style 400 that names it), never ignored. What depends on
the backend (``response_format``, ``logprobs``) is checked by the app (:mod:`interact.serve`).

Nothing here imports FastAPI: the models and shapes are plain pydantic and dicts.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sage_dialog.backends.base import Message
from sage_dialog.core import sac
from sage_dialog.core.errors import UserError
from sage_dialog.core.limits import find_surrogate, has_surrogate_escape
from sage_dialog.core.schema import Tags, Turn
from sage_dialog.roles.assistant import Candidate

MAX_N = 16
MAX_STOPS = 16

# ---------------------------------------------------------------------------------------------
# the one request validator


class _Strict(BaseModel):
    # extra="forbid": an unknown field is a 400 (as OpenAI answers), never a silent no-op
    # strict: `true` is not a number and "yes" not a boolean (lax mode would coerce both silently)
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


class TextPart(_Strict):
    """A ``{"type": "text", "text": ...}`` content part (the only kind a text model can read)."""

    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    """One message of the history."""

    role: str
    content: str | list[TextPart] | None = None
    name: str | None = None
    sage: dict[str, Any] | None = None  # the latent an earlier reply was returned with
    # what the openai SDK sends back when a returned message is appended to the history as it is
    refusal: str | None = None
    tool_calls: list[Any] | None = None
    function_call: Any = None
    audio: Any = None
    annotations: list[Any] | None = None

    @field_validator("role")
    @classmethod
    def _role(cls, v: str) -> str:
        if v in ("tool", "function"):
            raise ValueError(f"{v!r} messages belong to tool calling, which this server does not support")
        if v not in ("system", "developer", "user", "assistant"):
            raise ValueError(f"{v!r} is not one of system, developer, user, assistant")
        return v

    @model_validator(mode="after")
    def _content(self) -> ChatMessage:
        if self.content is None:
            raise ValueError("content: must be a string or a list of text parts, not null")
        if self.tool_calls or self.function_call:
            raise ValueError("tool_calls: tool calling is not supported by this server")
        return self

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content or [])


class StreamOptions(_Strict):
    include_usage: bool = False


class JsonSchemaFormat(_Strict):
    name: str = "answer"
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type json_schema needs a json_schema object")
        return self

    def reply_schema(self) -> dict[str, Any] | None:
        """The JSON schema the reply must follow, or None for plain text."""
        if self.type == "json_object":
            return {"type": "object"}
        if self.type == "json_schema" and self.json_schema is not None:
            return self.json_schema.schema_
        return None


class SamplingRequest(_Strict):
    """Fields shared by both endpoints. Ranges are OpenAI's; what cannot be honoured is refused."""

    model: str
    n: int = Field(1, ge=1, le=MAX_N)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0, le=100_000)
    repetition_penalty: float | None = Field(None, gt=0, le=10)
    max_tokens: int | None = Field(None, ge=1, le=10_000_000)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    user: str | None = None  # accepted: it identifies the caller and changes no output
    sage_steer: dict[str, Any] | None = None

    @field_validator("stop")
    @classmethod
    def _stop(cls, v: str | list[str] | None) -> str | list[str] | None:
        stops = [v] if isinstance(v, str) else (v or [])
        if len(stops) > MAX_STOPS:
            raise ValueError(f"at most {MAX_STOPS} stop strings")
        if any(not s for s in stops):
            raise ValueError("a stop string must not be empty")
        return v

    @model_validator(mode="after")
    def _unsupported(self) -> SamplingRequest:
        # OpenAI's penalties have no exact equivalent here (repetition_penalty is multiplicative)
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name):
                raise ValueError(f"{name}: not supported by this server (use repetition_penalty)")
        if self.logit_bias:
            raise ValueError("logit_bias: not supported by this server")
        return self


class ChatCompletionRequest(SamplingRequest):
    """``POST /v1/chat/completions``: OpenAI's request, validated; see the module docstring."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, le=10_000_000)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    function_call: Any = None
    parallel_tool_calls: bool | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None

    @model_validator(mode="after")
    def _no_tools(self) -> ChatCompletionRequest:
        if self.tools or self.functions:
            raise ValueError("tools: tool calling is not supported by this server")
        if self.tool_choice not in (None, "none") or self.function_call not in (None, "none"):
            raise ValueError("tool_choice: tool calling is not supported by this server")
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs: needs logprobs: true")
        return self


class CompletionRequest(SamplingRequest):
    """``POST /v1/completions``: each prompt is answered as one user message."""

    prompt: str | list[str]
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = Field(None, ge=1, le=MAX_N)

    @model_validator(mode="after")
    def _unsupported_completion(self) -> CompletionRequest:
        if self.echo:
            raise ValueError("echo: not supported (the prompt goes through the chat template)")
        if self.suffix:
            raise ValueError("suffix: not supported by this server")
        if self.best_of is not None and self.best_of != self.n:
            raise ValueError("best_of: not supported by this server (use n)")
        if isinstance(self.prompt, list) and not 1 <= len(self.prompt) <= MAX_N:
            raise ValueError(f"prompt: give 1 to {MAX_N} prompts")
        return self


class RequestRefused(Exception):
    """A request the server answers with an OpenAI-style error instead of a completion."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind


def validation_refusal(e: ValidationError) -> RequestRefused:
    """A pydantic error as a 400 naming the first (up to three) fields at fault."""
    problems = []
    for err in e.errors()[:3]:
        loc = ".".join(str(x) for x in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field, not supported by this server"
        problems.append(f"{loc}: {msg}" if loc else msg)
    first = e.errors()[0]["loc"] if e.errors() else ()
    return RequestRefused(400, "; ".join(problems), param=".".join(str(x) for x in first) or None)


def parse_request(body: bytes, model: type[SamplingRequest]) -> Any:
    """Bytes -> a validated request, or :class:`RequestRefused` (400) saying what is wrong."""
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):  # bad UTF-8, bad JSON, absurd nesting
        raise RequestRefused(400, "request body is not valid UTF-8 JSON") from None
    if not isinstance(obj, dict):
        raise RequestRefused(400, "request body must be a JSON object")
    if has_surrogate_escape(body.decode("latin-1")):  # refused as every reader refuses it (core.limits)
        found = find_surrogate(obj)
        if found is not None:
            field, ch = found
            raise RequestRefused(400, f"{field}: lone surrogate \\u{ord(ch):04x} is not Unicode text "
                                 "(a \\ud800-\\udfff escape must be half of a pair)", param=field)
    try:
        return model.model_validate(obj)
    except ValidationError as e:
        raise validation_refusal(e) from None


# ---------------------------------------------------------------------------------------------
# wire messages <-> SAC history


def _tags(obj: Any, where: str) -> Tags | None:
    if obj is None:
        return None
    try:
        return Tags.model_validate(obj)
    except ValidationError as e:
        raise UserError(f"{where}: not a tag object ({e.errors()[0]['msg']})") from None


def to_sac_messages(messages: list[dict[str, Any]] | list[ChatMessage]) -> list[Message]:
    """Client messages -> SAC history: assistant messages regain their tags from ``sage``."""
    out: list[Message] = []
    for i, raw in enumerate(messages):
        try:
            m = raw if isinstance(raw, ChatMessage) else ChatMessage.model_validate(raw)
        except ValidationError as e:
            raise UserError(f"messages[{i}]: {validation_refusal(e).message}") from None
        text = m.text()
        if m.role == "assistant" and m.sage is not None:
            state = _tags(m.sage.get("state"), f"messages[{i}].sage.state")
            action = _tags(m.sage.get("action"), f"messages[{i}].sage.action")
            text = sac.render_turn(sac.strip(text), state=state, action=action)
        out.append({"role": "system" if m.role == "developer" else m.role, "content": text})
    if not out or out[-1]["role"] != "user":
        raise UserError("messages: the last message must be from the user")
    return out


# ---------------------------------------------------------------------------------------------
# the replies


def finish_reason(c: Candidate) -> str:
    """A candidate's ``finish_reason`` as OpenAI names it (``stop`` or ``length``)."""
    return c.finish_reason if c.finish_reason in ("stop", "length") else "stop"


def token_usage(in_tokens: int, out_tokens: int) -> dict[str, int]:
    """The ``usage`` object of a reply."""
    return {
        "prompt_tokens": in_tokens,
        "completion_tokens": out_tokens,
        "total_tokens": in_tokens + out_tokens,
    }


def chat_logprobs(c: Candidate) -> dict[str, Any] | None:
    """``choices[i].logprobs`` in OpenAI's chat shape (token bytes included)."""
    if c.logprobs is None:
        return None

    def entry(e: dict[str, Any]) -> dict[str, Any]:
        return {"token": e["token"], "logprob": e["logprob"], "bytes": list(e["token"].encode())}

    content = [{**entry(e), "top_logprobs": [entry(t) for t in e["top_logprobs"]]} for e in c.logprobs]
    return {"content": content, "refusal": None}


def completion_logprobs(c: Candidate) -> dict[str, Any] | None:
    """``choices[i].logprobs`` in the legacy completions shape."""
    if c.logprobs is None:
        return None
    offsets, at = [], 0
    for e in c.logprobs:
        offsets.append(at)
        at += len(e["token"])
    return {
        "tokens": [e["token"] for e in c.logprobs],
        "token_logprobs": [e["logprob"] for e in c.logprobs],
        "top_logprobs": [{t["token"]: t["logprob"] for t in e["top_logprobs"]} for e in c.logprobs],
        "text_offset": offsets,
    }


def chat_chunk(
    cid: str,
    now: int,
    model: str,
    index: int,
    delta: dict[str, Any],
    finish: str | None = None,
    logprobs: dict[str, Any] | None = None,
) -> str:
    """One server-sent event of a streamed chat completion (``chat.completion.chunk``)."""
    obj = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": now,
        "model": model,
        "choices": [{"index": index, "delta": delta, "finish_reason": finish, "logprobs": logprobs}],
    }
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def turn_from_message(message: dict[str, Any]) -> Turn:
    """A returned ``choices[i].message`` as a SAC assistant :class:`Turn` (for clients in Python)."""
    latent = message.get("sage") or {}
    return Turn(
        role="assistant",
        text=str(message.get("content") or ""),
        state=_tags(latent.get("state"), "sage.state"),
        action=_tags(latent.get("action"), "sage.action"),
    )


__all__ = [
    "MAX_N",
    "MAX_STOPS",
    "ChatCompletionRequest",
    "ChatMessage",
    "CompletionRequest",
    "RequestRefused",
    "ResponseFormat",
    "SamplingRequest",
    "chat_chunk",
    "chat_logprobs",
    "completion_logprobs",
    "finish_reason",
    "parse_request",
    "to_sac_messages",
    "token_usage",
    "turn_from_message",
    "validation_refusal",
]

"""An OpenAI-compatible chat-completions server in front of a SAC model (FastAPI + uvicorn).

Clients send ordinary messages and get ordinary replies: the tag blocks the model writes are removed
from ``content`` and returned in an extra field, ``choices[i].message.sage = {"state": .., "action":
..}`` (in a stream: ``delta.sage`` on the first chunk and again on the last). The latent is written
first, with its own small budget, so ``max_tokens`` bounds the visible reply only and a short budget
never returns a cut-off tag block as ``content``. Extensions, all optional:

* ``"sage_steer": {"a_emotion": "playful", "a_motivation": "joke"}`` in the request forces fields
  of the reply (same keys as the chat's ``/steer``), by prefilling the assistant turn;
* an assistant message in the history may carry the ``sage`` field it was returned with, so the
  model sees its own earlier tags again (otherwise earlier replies go in untagged);
* ``top_k`` and ``repetition_penalty`` (as vLLM's server takes them).

Endpoints: ``POST /v1/chat/completions`` (``stream`` supported, server-sent events), ``POST
/v1/completions`` (the prompt is sent as one user message, as Ollama does), ``GET /v1/models``,
``GET /v1/models/{id}``, ``GET /health`` (never needs the token; 503 while an in-process model warms
up, see :func:`create_app`). With a token set, every ``/v1``
request must carry ``Authorization: Bearer TOKEN`` or is refused with 401; the token is never logged.

Every request body goes through one validator (:class:`ChatCompletionRequest` /
:class:`CompletionRequest`, pydantic): a field out of range, of the wrong type, or one this server
cannot honour (``tools``, a non-zero ``presence_penalty``, ``response_format`` on a backend without
a structured mode, ``logprobs`` on a backend without token logprobs, an unknown field) is answered
with an OpenAI-style 400 that names it, never ignored. :class:`ServeLimits` bounds the work one
request can cause: body size (413), prompt tokens and ``max_tokens`` (400), wall time (504); a client
that disconnects cancels its generation; SIGTERM stops the server within ``shutdown_timeout_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import FastAPI, Request  # at module level: FastAPI resolves endpoint annotations by name
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sage_dialog.backends.base import Backend, BackendError, ChatRequest, Message, SamplingParams
from sage_dialog.core import sac
from sage_dialog.core.errors import UserError
from sage_dialog.core.limits import find_surrogate, has_surrogate_escape
from sage_dialog.core.redact import add_secret, install_log_filter, redact
from sage_dialog.core.schema import Tags, Turn
from sage_dialog.roles.assistant import Candidate, generate_turns, stream_turn
from sage_dialog.roles.steering import parse_steering

log = logging.getLogger("uvicorn.error")  # shown at the server's --log-level, beside the access log

TOKEN_ENV = "SAGE_DIALOG_SERVE_TOKEN"
MAX_N = 16
MAX_STOPS = 16
# providers whose structured mode (ChatRequest.json_schema) constrains decoding; a backend may say so
# itself with a ``supports_json_schema`` attribute (hf: when xgrammar is installed)
STRUCTURED_PROVIDERS = ("vllm", "openai")
WARM_PROVIDERS = ("hf", "vllm")  # in-process models: warmed up before /health says ready


@dataclass(frozen=True)
class ServeLimits:
    """What one request may cost. Each is a ``sage-dialog serve`` flag (docs/chat-and-serving.md).

    Prompt tokens are counted with the backend's tokenizer where it has one (``hf``, ``vllm``);
    for other backends they are estimated as one token per 4 characters.
    """

    max_request_bytes: int = 1_048_576  # 1 MiB of JSON: far more than any sane chat history
    max_prompt_tokens: int = 4096  # prompt cost grows ~quadratically: 16k words took 31 s on CPU
    max_completion_tokens: int = 4096  # the largest max_tokens a request may ask for
    request_timeout_s: float = 300.0  # wall time of one request, streaming included (and of its body's upload)
    header_timeout_s: float = 10.0  # a request's headers must arrive within this (slow-loris clients)
    shutdown_timeout_s: float = 5.0  # after SIGTERM, in-flight requests get this long, then are cancelled


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


class _SamplingRequest(_Strict):
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
    def _unsupported(self) -> _SamplingRequest:
        # OpenAI's penalties have no exact equivalent here (repetition_penalty is multiplicative)
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name):
                raise ValueError(f"{name}: not supported by this server (use repetition_penalty)")
        if self.logit_bias:
            raise ValueError("logit_bias: not supported by this server")
        return self


class ChatCompletionRequest(_SamplingRequest):
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


class CompletionRequest(_SamplingRequest):
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


def _validation_refusal(e: ValidationError) -> RequestRefused:
    problems = []
    for err in e.errors()[:3]:
        loc = ".".join(str(x) for x in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field, not supported by this server"
        problems.append(f"{loc}: {msg}" if loc else msg)
    first = e.errors()[0]["loc"] if e.errors() else ()
    return RequestRefused(400, "; ".join(problems), param=".".join(str(x) for x in first) or None)


def parse_request(body: bytes, model: type[_SamplingRequest]) -> Any:
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
        raise _validation_refusal(e) from None


# ---------------------------------------------------------------------------------------------
# messages and sampling


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
            raise UserError(f"messages[{i}]: {_validation_refusal(e).message}") from None
        text = m.text()
        if m.role == "assistant" and m.sage is not None:
            state = _tags(m.sage.get("state"), f"messages[{i}].sage.state")
            action = _tags(m.sage.get("action"), f"messages[{i}].sage.action")
            text = sac.render_turn(sac.strip(text), state=state, action=action)
        out.append({"role": "system" if m.role == "developer" else m.role, "content": text})
    if not out or out[-1]["role"] != "user":
        raise UserError("messages: the last message must be from the user")
    return out


def _latent(c: Candidate) -> dict[str, Any]:
    return c.latent()


def _sampling(req: _SamplingRequest, default: SamplingParams, limits: ServeLimits) -> SamplingParams:
    stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
    asked = getattr(req, "max_completion_tokens", None) or req.max_tokens
    max_tokens = asked or min(default.max_tokens, limits.max_completion_tokens)
    if max_tokens > limits.max_completion_tokens:
        raise RequestRefused(
            400,
            f"max_tokens: {max_tokens} is more than this server allows ({limits.max_completion_tokens})",
            param="max_tokens",
        )
    return SamplingParams(
        temperature=default.temperature if req.temperature is None else req.temperature,
        top_p=default.top_p if req.top_p is None else req.top_p,
        top_k=default.top_k if req.top_k is None else req.top_k,
        repetition_penalty=default.repetition_penalty
        if req.repetition_penalty is None
        else req.repetition_penalty,
        max_tokens=max_tokens,
        stop=stop,
        seed=req.seed if req.seed is not None else default.seed,
    )


def count_prompt_tokens(backend: Backend, msgs: list[Message], limit: int | None = None) -> int:
    """Prompt tokens as the backend will see them (its tokenizer and chat template), else ~chars/4.

    With ``limit``, a long prompt is first counted on its first ``16 * limit`` characters: when
    that prefix alone is over the limit (always, for text of under 16 characters a token) the
    count of the prefix is returned, so a hostile megabyte costs a fraction of its tokenizing."""
    tok = getattr(backend, "tokenizer", None)
    if tok is None or not hasattr(tok, "apply_chat_template"):
        return math.ceil(sum(len(m["content"]) for m in msgs) / 4)
    from sage_dialog.backends.hf import render_prompt  # no torch import: hf imports it lazily

    prompt = render_prompt(tok, msgs, None)
    if limit is not None and len(prompt) > 16 * limit:
        head = len(tok(prompt[: 16 * limit], add_special_tokens=False)["input_ids"])
        if head > limit:
            return head
    return len(tok(prompt, add_special_tokens=False)["input_ids"])


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to be over ``limit`` bytes."""
    too_big = RequestRefused(
        413,
        f"request body is larger than {limit} bytes (server flag --max-request-bytes)",
        code="request_too_large",
    )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_big
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


async def _bounded(request: Request, work: Awaitable[Any], timeout_s: float) -> Any:
    """Await ``work`` unless the client goes away (cancel, 499) or it runs past ``timeout_s`` (504)."""
    task = asyncio.ensure_future(work)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    try:
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise RequestRefused(
                    504,
                    f"the request took longer than {timeout_s:g} s (server flag "
                    "--request-timeout); its generation was stopped",
                    kind="timeout",
                    code="timeout",
                )
            done, _ = await asyncio.wait({task}, timeout=min(0.25, remaining))
            if done:
                return task.result()
            if await request.is_disconnected():
                log.info("client disconnected; generation cancelled")
                raise RequestRefused(499, "client disconnected", code="client_closed")
    finally:
        if not task.done():
            task.cancel()  # backends stop the rows of a cancelled request at the next token
            with contextlib.suppress(BaseException):
                await task


# ---------------------------------------------------------------------------------------------
# the app


class _TokenGate:
    """Pure ASGI middleware (so streams still see client disconnects): bearer token on ``/v1``."""

    def __init__(self, app: Any, token: str | None):
        self.app, self.token = app, token

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.token and scope["type"] == "http" and str(scope.get("path", "")).startswith("/v1"):
            auth = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
            scheme, _, given = auth.partition(" ")
            # constant-time comparison; the header's value is never logged or echoed
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode(), self.token.encode()
            ):
                response = _error(
                    401, "missing or wrong bearer token", "authentication_error", "invalid_api_key"
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _error(
    status: int,
    message: str,
    kind: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
) -> JSONResponse:
    return JSONResponse(
        status_code=status,
        content={"error": {"message": redact(message), "type": kind, "param": param, "code": code}},
    )


def _refusal(r: RequestRefused) -> JSONResponse:
    return _error(r.status, r.message, r.kind, r.code, r.param)


def create_app(
    backend: Backend,
    *,
    model_name: str | None = None,
    token: str | None = None,
    sampling: SamplingParams | None = None,
    system_prompt: str | None = None,
    limits: ServeLimits | None = None,
    warmup: bool | None = None,
) -> Any:
    """Build the FastAPI app. ``model_name`` is what ``/v1/models`` lists and requests must name.

    ``warmup`` (default: for in-process models, ``hf`` and ``vllm``): when the server starts, one
    short generation runs first (the first forward passes of a fresh process are many times slower
    than later ones: 19-107 s for SmolLM2's first request on 2 CPU cores); ``/health`` answers 503
    ``{"status": "warming up"}`` until it is done, then 200 ``{"status": "ok"}``. Requests that
    come earlier are served, just not faster. Remote backends (``openai``) are not warmed: that
    would be a paid call.
    """
    served = model_name or backend.name
    default_sampling = sampling or SamplingParams(temperature=0.8, max_tokens=256)
    lim = limits or ServeLimits()
    warm = backend.provider in WARM_PROVIDERS if warmup is None else warmup
    state = {"ready": not warm}

    async def warm_up() -> None:
        t = time.perf_counter()
        msgs: list[Message] = [{"role": "user", "content": "Hello! How are you today?"}]
        if system_prompt:
            msgs.insert(0, {"role": "system", "content": system_prompt})
        try:
            await asyncio.to_thread(count_prompt_tokens, backend, msgs, lim.max_prompt_tokens)
            await backend.generate([ChatRequest(msgs, sampling=SamplingParams(temperature=0.0, max_tokens=8))])
            log.info("model warmed up in %.1f s; ready", time.perf_counter() - t)
        except Exception as e:  # still serve: the first real request reports what is wrong
            log.warning("warm-up failed (%s); serving anyway", e)
        finally:
            state["ready"] = True

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        task = asyncio.create_task(warm_up()) if warm else None
        try:
            yield
        finally:
            if task is not None and not task.done():
                task.cancel()

    app = FastAPI(title="sage-dialog", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.add_middleware(_TokenGate, token=token)
    created = int(time.time())
    model_obj = {"id": served, "object": "model", "created": created, "owned_by": "sage-dialog"}
    error = _error

    add_secret(token)  # core.redact masks it (and every configured key) in error bodies and the log
    install_log_filter()  # uvicorn's access and error log too (a ?api_key=... query)

    def check_model(name: str) -> None:
        if name not in (served, backend.name, backend.model):
            raise RequestRefused(
                404,
                f"model {name!r} is not served here (GET /v1/models lists {served!r})",
                param="model",
                code="model_not_found",
            )

    async def prepare(msgs: list[Message], req: _SamplingRequest) -> SamplingParams:
        """Checks that need the backend: prompt size, sampling limits."""
        if system_prompt and msgs[0]["role"] != "system":
            msgs.insert(0, {"role": "system", "content": system_prompt})
        sp = _sampling(req, default_sampling, lim)
        n_prompt = await asyncio.to_thread(count_prompt_tokens, backend, msgs, lim.max_prompt_tokens)
        if n_prompt > lim.max_prompt_tokens:
            raise RequestRefused(
                400,
                f"messages: the prompt is at least {n_prompt} tokens, more than this server allows "
                f"({lim.max_prompt_tokens}, server flag --max-prompt-tokens)",
                param="messages",
                code="context_length_exceeded",
            )
        return sp

    def check_capabilities(logprobs: bool, schema: dict[str, Any] | None) -> None:
        # what the backend cannot do is refused, never ignored
        if logprobs and not getattr(backend, "supports_logprobs", False):
            raise RequestRefused(
                400, f"logprobs: backend {backend.name} cannot return token logprobs", param="logprobs"
            )
        structured = getattr(backend, "supports_json_schema", backend.provider in STRUCTURED_PROVIDERS)
        if schema is not None and not structured:
            raise RequestRefused(
                400,
                f"response_format: backend {backend.name} has no structured output mode "
                "(serve a vllm: or openai: model for JSON output)",
                param="response_format",
            )

    async def guarded(request: Request, handler: Callable[[bytes], Awaitable[Any]]) -> Any:
        try:
            try:  # a body trickling in at 2 bytes/s is cut like a slow generation
                body = await asyncio.wait_for(_read_body(request, lim.max_request_bytes), lim.request_timeout_s)
            except asyncio.TimeoutError:
                late = error(408, f"the request body did not arrive within {lim.request_timeout_s:g} s "
                             "(server flag --request-timeout)", "invalid_request_error", "timeout")
                late.headers["Connection"] = "close"  # the rest of the body is not read
                return late
            return await handler(body)
        except RequestRefused as r:
            return _refusal(r)
        except UserError as e:
            return error(400, "; ".join(e.problems))
        except BackendError as e:
            return error(502, f"generation failed: {e}", "server_error", e.kind)

    @app.get("/health")
    async def health() -> Any:
        if not state["ready"]:  # a load balancer / script waits for 200
            return JSONResponse(status_code=503, content={"status": "warming up", "model": served})
        return {"status": "ok", "model": served}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [model_obj]}

    @app.get("/v1/models/{model_id:path}")
    async def model_info(model_id: str) -> Any:
        try:
            check_model(model_id)
        except RequestRefused as r:
            return _refusal(r)
        return model_obj

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        async def handle(body: bytes) -> Any:
            req: ChatCompletionRequest = parse_request(body, ChatCompletionRequest)
            check_model(req.model)
            schema = req.response_format.reply_schema() if req.response_format else None
            check_capabilities(bool(req.logprobs), schema)
            if schema is not None and req.sage_steer:
                raise RequestRefused(
                    400, "sage_steer: cannot be combined with a JSON response_format", param="sage_steer"
                )
            msgs = to_sac_messages(req.messages)
            steering = parse_steering(req.sage_steer, what="sage_steer")
            sp = await prepare(msgs, req)
            top = (req.top_logprobs or 0) if req.logprobs else None
            cid = f"chatcmpl-{uuid.uuid4().hex}"
            now = int(time.time())
            if req.stream:
                include_usage = bool(req.stream_options and req.stream_options.include_usage)
                events = _sse(
                    backend, msgs, steering, sp, req.n, cid, now, served, include_usage, schema, top
                )
                return StreamingResponse(
                    _deadline(events, lim.request_timeout_s, cid, now, served),
                    media_type="text/event-stream",
                    headers={"Cache-Control": "no-cache"},
                )
            cands = await _bounded(
                request, _generate(backend, msgs, steering, req.n, sp, schema, top), lim.request_timeout_s
            )
            out_tokens = sum(c.tokens_out for c in cands)
            in_tokens = cands[0].tokens_in if cands else 0
            return {
                "id": cid,
                "object": "chat.completion",
                "created": now,
                "model": served,
                "choices": [
                    {
                        "index": i,
                        "message": {"role": "assistant", "content": c.reply, "sage": _latent(c)},
                        "finish_reason": _finish(c),
                        "logprobs": _chat_logprobs(c),
                    }
                    for i, c in enumerate(cands)
                ],
                "usage": _usage(in_tokens, out_tokens),
            }

        return await guarded(request, handle)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        async def handle(body: bytes) -> Any:
            req: CompletionRequest = parse_request(body, CompletionRequest)
            check_model(req.model)
            check_capabilities(req.logprobs is not None, None)
            steering = parse_steering(req.sage_steer, what="sage_steer")
            prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
            histories = [[{"role": "user", "content": p}] for p in prompts]
            sp = None
            for msgs in histories:
                sp = await prepare(msgs, req)
            assert sp is not None
            cid = f"cmpl-{uuid.uuid4().hex}"
            now = int(time.time())

            async def run_all() -> list[list[Candidate]]:
                return list(
                    await asyncio.gather(
                        *(_generate(backend, m, steering, req.n, sp, None, req.logprobs) for m in histories)
                    )
                )

            per_prompt = await _bounded(request, run_all(), lim.request_timeout_s)
            choices: list[dict[str, Any]] = []
            in_tokens = out_tokens = 0
            for cands in per_prompt:
                in_tokens += cands[0].tokens_in if cands else 0
                for c in cands:
                    out_tokens += c.tokens_out
                    choices.append(
                        {
                            "index": len(choices),
                            "text": c.reply,
                            "logprobs": _completion_logprobs(c),
                            "finish_reason": _finish(c),
                            "sage": _latent(c),
                        }
                    )
            if req.stream:  # generated whole, then sent as one chunk per choice

                async def events() -> AsyncIterator[str]:
                    for ch in choices:
                        obj = {
                            "id": cid,
                            "object": "text_completion",
                            "created": now,
                            "model": served,
                            "choices": [ch],
                        }
                        yield f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"
                    yield "data: [DONE]\n\n"

                return StreamingResponse(events(), media_type="text/event-stream")
            return {
                "id": cid,
                "object": "text_completion",
                "created": now,
                "model": served,
                "choices": choices,
                "usage": _usage(in_tokens, out_tokens),
            }

        return await guarded(request, handle)

    return app


def _finish(c: Candidate) -> str:
    return c.finish_reason if c.finish_reason in ("stop", "length") else "stop"


def _usage(in_tokens: int, out_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": in_tokens,
        "completion_tokens": out_tokens,
        "total_tokens": in_tokens + out_tokens,
    }


async def _generate(
    backend: Backend,
    msgs: list[Message],
    steering: Any,
    n: int,
    sp: SamplingParams,
    schema: dict[str, Any] | None,
    logprobs: int | None = None,
) -> list[Candidate]:
    if schema is not None:
        # structured replies skip the latent: the backends' structured mode constrains the whole turn
        return await generate_turns(backend, msgs, n=n, sampling=sp, json_schema=schema, logprobs=logprobs)
    return await generate_turns(
        backend, msgs, steering=steering, n=n, sampling=sp, latent_first=True, logprobs=logprobs
    )


def _chat_logprobs(c: Candidate) -> dict[str, Any] | None:
    """``choices[i].logprobs`` in OpenAI's chat shape (token bytes included)."""
    if c.logprobs is None:
        return None

    def entry(e: dict[str, Any]) -> dict[str, Any]:
        return {"token": e["token"], "logprob": e["logprob"], "bytes": list(e["token"].encode())}

    content = [{**entry(e), "top_logprobs": [entry(t) for t in e["top_logprobs"]]} for e in c.logprobs]
    return {"content": content, "refusal": None}


def _completion_logprobs(c: Candidate) -> dict[str, Any] | None:
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


def _chunk(
    cid: str,
    now: int,
    model: str,
    index: int,
    delta: dict[str, Any],
    finish: str | None = None,
    logprobs: dict[str, Any] | None = None,
) -> str:
    obj = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": now,
        "model": model,
        "choices": [{"index": index, "delta": delta, "finish_reason": finish, "logprobs": logprobs}],
    }
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


async def _deadline(
    events: AsyncIterator[str], timeout_s: float, cid: str, now: int, model: str
) -> AsyncIterator[str]:
    """Pass the stream through until ``timeout_s``; then stop its generation and send an error event."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    try:
        while True:
            try:
                ev = await asyncio.wait_for(anext(events), max(0.0, deadline - loop.time()))
            except StopAsyncIteration:
                return
            except TimeoutError:
                break
            yield ev
    finally:
        await events.aclose()  # type: ignore[attr-defined]  # stops the generation behind it
    err = {
        "message": f"the request took longer than {timeout_s:g} s (server flag --request-timeout); "
        "its generation was stopped",
        "type": "timeout",
        "param": None,
        "code": "timeout",
    }
    obj = {"id": cid, "object": "chat.completion.chunk", "created": now, "model": model, "error": err}
    yield f"data: {json.dumps(obj)}\n\n"


async def _sse(
    backend: Backend,
    msgs: list[Message],
    steering: Any,
    sp: SamplingParams,
    n: int,
    cid: str,
    now: int,
    model: str,
    include_usage: bool,
    schema: dict[str, Any] | None = None,
    logprobs: int | None = None,
) -> AsyncIterator[str]:
    """Server-sent events: one choice streams token by token; n > 1 choices (and replies with a
    schema or logprobs) are generated whole, then sent in turn."""
    cands: list[Candidate] = []
    if n == 1 and schema is None and logprobs is None:
        async for ev in stream_turn(backend, msgs, steering=steering, sampling=sp, latent_first=True):
            if ev.kind == "latent":
                latent = {
                    "state": ev.state.model_dump(exclude_defaults=True) if ev.state is not None else None,
                    "action": ev.action.model_dump(exclude_defaults=True) if ev.action is not None else None,
                }
                yield _chunk(cid, now, model, 0, {"role": "assistant", "content": "", "sage": latent})
            elif ev.kind == "text":
                yield _chunk(cid, now, model, 0, {"content": ev.text})
            elif ev.kind == "done" and ev.candidate is not None:
                cands.append(ev.candidate)
    else:
        cands = await _generate(backend, msgs, steering, n, sp, schema, logprobs)
        for i, c in enumerate(cands):
            yield _chunk(cid, now, model, i, {"role": "assistant", "content": "", "sage": _latent(c)})
            yield _chunk(cid, now, model, i, {"content": c.reply}, logprobs=_chat_logprobs(c))
    for i, c in enumerate(cands):
        yield _chunk(cid, now, model, i, {"sage": _latent(c)}, _finish(c))
    if include_usage:
        out_tokens = sum(c.tokens_out for c in cands)
        in_tokens = cands[0].tokens_in if cands else 0
        obj = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": now,
            "model": model,
            "choices": [],
            "usage": _usage(in_tokens, out_tokens),
        }
        yield f"data: {json.dumps(obj)}\n\n"
    yield "data: [DONE]\n\n"


def turn_from_message(message: dict[str, Any]) -> Turn:
    """A returned ``choices[i].message`` as a SAC assistant :class:`Turn` (for clients in Python)."""
    latent = message.get("sage") or {}
    return Turn(
        role="assistant",
        text=str(message.get("content") or ""),
        state=_tags(latent.get("state"), "sage.state"),
        action=_tags(latent.get("action"), "sage.action"),
    )


def serve(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    limits: ServeLimits | None = None,
) -> None:
    """Run the app with uvicorn until SIGINT/SIGTERM (requests still running after
    ``limits.shutdown_timeout_s`` are cancelled, which stops their generation)."""
    import uvicorn

    uvicorn.Server(server_config(app, host=host, port=port, log_level=log_level, limits=limits)).run()


def server_config(app: Any, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info",
                  limits: ServeLimits | None = None) -> Any:
    """The ``uvicorn.Config`` of :func:`serve`: graceful shutdown, and a deadline for request headers
    (:mod:`interact.http_guard`; slow bodies are cut in the app under ``request_timeout_s``)."""
    import uvicorn

    from sage_dialog.interact.http_guard import header_deadline_protocol

    lim = limits or ServeLimits()
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        http=header_deadline_protocol(lim.header_timeout_s),
        timeout_graceful_shutdown=max(1, math.ceil(lim.shutdown_timeout_s)),
    )


__all__ = [
    "ChatCompletionRequest",
    "CompletionRequest",
    "ServeLimits",
    "create_app",
    "parse_request",
    "serve",
    "server_config",
    "to_sac_messages",
    "turn_from_message",
]

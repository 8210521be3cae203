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

Every request body goes through one validator (:func:`interact.openai_wire.parse_request`, the
OpenAI wire schema): a field out of range, of the wrong type, or one this server cannot honour
(``tools``, a non-zero ``presence_penalty``, ``response_format`` on a backend without a structured
mode, ``logprobs`` on a backend without token logprobs, an unknown field) is answered with an
OpenAI-style 400 that names it, never ignored. :class:`interact.serve_limits.ServeLimits` bounds
the work one request can cause: body size (413), prompt tokens and ``max_tokens`` (400), wall time
(504); a client that disconnects cancels its generation; SIGTERM stops the server within
``shutdown_timeout_s``. This module is the FastAPI app and its uvicorn server.
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
from typing import Any

from fastapi import FastAPI, Request  # at module level: FastAPI resolves endpoint annotations by name
from fastapi.responses import JSONResponse, StreamingResponse

from sage_dialog.backends.base import Backend, BackendError, ChatRequest, Message, SamplingParams
from sage_dialog.core.errors import UserError
from sage_dialog.core.redact import add_secret, install_log_filter, redact
from sage_dialog.interact.openai_wire import (
    ChatCompletionRequest,
    CompletionRequest,
    RequestRefused,
    SamplingRequest,
    chat_chunk,
    chat_logprobs,
    completion_logprobs,
    finish_reason,
    parse_request,
    to_sac_messages,
    token_usage,
)
from sage_dialog.interact.serve_limits import (
    ServeLimits,
    bounded,
    count_prompt_tokens,
    read_body,
    sampling_params,
)
from sage_dialog.roles.assistant import Candidate, generate_turns, stream_turn
from sage_dialog.roles.steering import parse_steering

log = logging.getLogger("uvicorn.error")  # shown at the server's --log-level, beside the access log

TOKEN_ENV = "SAGE_DIALOG_SERVE_TOKEN"
# providers whose structured mode (ChatRequest.json_schema) constrains decoding; a backend may say so
# itself with a ``supports_json_schema`` attribute (hf: when xgrammar is installed)
STRUCTURED_PROVIDERS = ("vllm", "openai")
WARM_PROVIDERS = ("hf", "vllm")  # in-process models: warmed up before /health says ready


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

    async def prepare(msgs: list[Message], req: SamplingRequest) -> SamplingParams:
        """Checks that need the backend: prompt size, sampling limits."""
        if system_prompt and msgs[0]["role"] != "system":
            msgs.insert(0, {"role": "system", "content": system_prompt})
        sp = sampling_params(req, default_sampling, lim)
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
                body = await asyncio.wait_for(read_body(request, lim.max_request_bytes), lim.request_timeout_s)
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
            cands = await bounded(
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
                        "message": {"role": "assistant", "content": c.reply, "sage": c.latent()},
                        "finish_reason": finish_reason(c),
                        "logprobs": chat_logprobs(c),
                    }
                    for i, c in enumerate(cands)
                ],
                "usage": token_usage(in_tokens, out_tokens),
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

            per_prompt = await bounded(request, run_all(), lim.request_timeout_s)
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
                            "logprobs": completion_logprobs(c),
                            "finish_reason": finish_reason(c),
                            "sage": c.latent(),
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
                "usage": token_usage(in_tokens, out_tokens),
            }

        return await guarded(request, handle)

    return app


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
                yield chat_chunk(cid, now, model, 0, {"role": "assistant", "content": "", "sage": latent})
            elif ev.kind == "text":
                yield chat_chunk(cid, now, model, 0, {"content": ev.text})
            elif ev.kind == "done" and ev.candidate is not None:
                cands.append(ev.candidate)
    else:
        cands = await _generate(backend, msgs, steering, n, sp, schema, logprobs)
        for i, c in enumerate(cands):
            yield chat_chunk(cid, now, model, i, {"role": "assistant", "content": "", "sage": c.latent()})
            yield chat_chunk(cid, now, model, i, {"content": c.reply}, logprobs=chat_logprobs(c))
    for i, c in enumerate(cands):
        yield chat_chunk(cid, now, model, i, {"sage": c.latent()}, finish_reason(c))
    if include_usage:
        out_tokens = sum(c.tokens_out for c in cands)
        in_tokens = cands[0].tokens_in if cands else 0
        obj = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": now,
            "model": model,
            "choices": [],
            "usage": token_usage(in_tokens, out_tokens),
        }
        yield f"data: {json.dumps(obj)}\n\n"
    yield "data: [DONE]\n\n"


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


__all__ = ["TOKEN_ENV", "create_app", "serve", "server_config"]

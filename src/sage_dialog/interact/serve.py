"""An OpenAI-compatible chat-completions server in front of a SAC model (FastAPI + uvicorn).

Clients send ordinary messages and get ordinary replies: the tag blocks the model writes are removed
from ``content`` and returned in an extra field, ``choices[i].message.sage = {"state": .., "action":
..}`` (in a stream: ``delta.sage`` on the first chunk and again on the last). Extensions, all
optional:

* ``"sage_steer": {"a_emotion": "playful", "a_motivation": "joke"}`` in the request forces fields
  of the reply (same keys as the chat's ``/steer``), by prefilling the assistant turn;
* an assistant message in the history may carry the ``sage`` field it was returned with, so the
  model sees its own earlier tags again (otherwise earlier replies go in untagged).

Endpoints: ``POST /v1/chat/completions`` (``stream`` supported, server-sent events), ``GET
/v1/models``, ``GET /health`` (never needs the token). With a token set, every ``/v1`` request
must carry ``Authorization: Bearer TOKEN`` or is refused with 401; the token is never logged.
"""

from __future__ import annotations

import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request  # at module level: FastAPI resolves endpoint annotations by name
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, ValidationError

from sage_dialog.backends.base import Backend, BackendError, Message, SamplingParams
from sage_dialog.core import sac
from sage_dialog.core.errors import UserError
from sage_dialog.core.redact import add_secret, install_log_filter, redact
from sage_dialog.core.schema import Tags, Turn
from sage_dialog.roles.assistant import Candidate, generate_turns, parse_steering, stream_turn

TOKEN_ENV = "SAGE_DIALOG_SERVE_TOKEN"
MAX_N = 16


class ChatCompletionRequest(BaseModel):
    """The subset of OpenAI's request that a SAC model can honour; other fields are ignored."""

    model_config = ConfigDict(extra="ignore")
    model: str
    messages: list[dict[str, Any]]
    n: int = 1
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    sage_steer: dict[str, Any] | None = None


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    raise UserError(f"message content must be a string or a list of text parts, got {type(content).__name__}")


def _tags(obj: Any, where: str) -> Tags | None:
    if obj is None:
        return None
    try:
        return Tags.model_validate(obj)
    except ValidationError as e:
        raise UserError(f"{where}: not a tag object ({e.errors()[0]['msg']})") from None


def to_sac_messages(messages: list[dict[str, Any]]) -> list[Message]:
    """Client messages -> SAC history: assistant messages regain their tags from ``sage``."""
    out: list[Message] = []
    for i, m in enumerate(messages):
        role = m.get("role")
        if role not in ("system", "user", "assistant", "developer"):
            raise UserError(f"messages[{i}].role: {role!r} is not one of system, user, assistant")
        text = _content_text(m.get("content"))
        if role == "assistant" and isinstance(m.get("sage"), dict):
            latent = m["sage"]
            state = _tags(latent.get("state"), f"messages[{i}].sage.state")
            action = _tags(latent.get("action"), f"messages[{i}].sage.action")
            text = sac.render_turn(sac.strip(text), state=state, action=action)
        out.append({"role": "system" if role == "developer" else str(role), "content": text})
    if not out or out[-1]["role"] != "user":
        raise UserError("messages: the last message must be from the user")
    return out


def _latent(c: Candidate) -> dict[str, Any]:
    return c.latent()


def _sampling(req: ChatCompletionRequest, default: SamplingParams) -> SamplingParams:
    stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
    max_tokens = req.max_completion_tokens or req.max_tokens or default.max_tokens
    if max_tokens < 1:
        raise UserError("max_tokens must be at least 1")
    return SamplingParams(
        temperature=default.temperature if req.temperature is None else req.temperature,
        top_p=default.top_p if req.top_p is None else req.top_p,
        max_tokens=max_tokens,
        stop=stop,
        seed=req.seed if req.seed is not None else default.seed,
    )


def create_app(
    backend: Backend,
    *,
    model_name: str | None = None,
    token: str | None = None,
    sampling: SamplingParams | None = None,
    system_prompt: str | None = None,
) -> Any:
    """Build the FastAPI app. ``model_name`` is what ``/v1/models`` lists and requests must name."""
    served = model_name or backend.name
    default_sampling = sampling or SamplingParams(temperature=0.8, max_tokens=256)
    app = FastAPI(title="sage-dialog", docs_url=None, redoc_url=None, openapi_url=None)
    created = int(time.time())

    add_secret(token)  # core.redact masks it (and every configured key) in error bodies and the log
    install_log_filter()  # uvicorn's access and error log too (a ?api_key=... query)

    def error(status: int, message: str, kind: str = "invalid_request_error", code: str | None = None) -> Any:
        return JSONResponse(status_code=status,
                            content={"error": {"message": redact(message), "type": kind, "code": code}})

    @app.middleware("http")
    async def check_token(request: Request, call_next: Any) -> Any:
        if token and request.url.path.startswith("/v1"):
            auth = request.headers.get("authorization", "")
            scheme, _, given = auth.partition(" ")
            # constant-time comparison; the header's value is never logged or echoed
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
                return error(401, "missing or wrong bearer token", "authentication_error", "invalid_api_key")
        return await call_next(request)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "model": served}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": served, "object": "model", "created": created, "owned_by": "sage-dialog"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return error(400, "request body is not JSON")
        try:
            req = ChatCompletionRequest.model_validate(body)
        except ValidationError as e:
            first = e.errors()[0]
            return error(400, f"{'.'.join(map(str, first['loc']))}: {first['msg']}")
        if req.model not in (served, backend.name, backend.model):
            return error(404, f"model {req.model!r} is not served here (GET /v1/models lists {served!r})", code="model_not_found")
        if not 1 <= req.n <= MAX_N:
            return error(400, f"n must be between 1 and {MAX_N}")
        try:
            msgs = to_sac_messages(req.messages)
            if system_prompt and msgs[0]["role"] != "system":
                msgs.insert(0, {"role": "system", "content": system_prompt})
            steering = parse_steering(req.sage_steer, what="sage_steer")
            sp = _sampling(req, default_sampling)
        except UserError as e:
            return error(400, "; ".join(e.problems))
        cid = f"chatcmpl-{uuid.uuid4().hex}"
        now = int(time.time())
        if req.stream:
            include_usage = bool((req.stream_options or {}).get("include_usage"))
            return StreamingResponse(
                _sse(backend, msgs, steering, sp, req.n, cid, now, served, include_usage),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        try:
            cands = await generate_turns(backend, msgs, steering=steering, n=req.n, sampling=sp)
        except BackendError as e:
            return error(502, f"generation failed: {e}", "server_error", e.kind)
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
                    "finish_reason": c.finish_reason if c.finish_reason in ("stop", "length") else "stop",
                    "logprobs": None,
                }
                for i, c in enumerate(cands)
            ],
            "usage": {"prompt_tokens": in_tokens, "completion_tokens": out_tokens, "total_tokens": in_tokens + out_tokens},
        }

    return app


def _chunk(cid: str, now: int, model: str, index: int, delta: dict[str, Any], finish: str | None = None) -> str:
    obj = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": now,
        "model": model,
        "choices": [{"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}],
    }
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


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
) -> AsyncIterator[str]:
    """Server-sent events: one choice streams token by token; n > 1 choices are sent whole, in turn."""
    cands: list[Candidate] = []
    if n == 1:
        async for ev in stream_turn(backend, msgs, steering=steering, sampling=sp):
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
        cands = await generate_turns(backend, msgs, steering=steering, n=n, sampling=sp)
        for i, c in enumerate(cands):
            yield _chunk(cid, now, model, i, {"role": "assistant", "content": "", "sage": _latent(c)})
            yield _chunk(cid, now, model, i, {"content": c.reply})
    for i, c in enumerate(cands):
        finish = c.finish_reason if c.finish_reason in ("stop", "length") else "stop"
        yield _chunk(cid, now, model, i, {"sage": _latent(c)}, finish)
    if include_usage:
        out_tokens = sum(c.tokens_out for c in cands)
        in_tokens = cands[0].tokens_in if cands else 0
        usage = {"prompt_tokens": in_tokens, "completion_tokens": out_tokens, "total_tokens": in_tokens + out_tokens}
        obj = {"id": cid, "object": "chat.completion.chunk", "created": now, "model": model, "choices": [], "usage": usage}
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


def serve(app: Any, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Run the app with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=log_level)

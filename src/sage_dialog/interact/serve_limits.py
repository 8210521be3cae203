"""What one request to ``sage-dialog serve`` may cost, and the checks that hold it to that.

:class:`ServeLimits` bounds the work one request can cause: body size (413, :func:`read_body`),
prompt tokens (:func:`count_prompt_tokens`) and ``max_tokens`` (400, :func:`sampling_params`), wall
time (504, :func:`bounded`, which also cancels the generation of a client that disconnects).
Nothing here imports FastAPI (its ``Request`` is only a type here).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sage_dialog.backends.base import Backend, Message, SamplingParams
from sage_dialog.interact.openai_wire import RequestRefused, SamplingRequest

if TYPE_CHECKING:
    from fastapi import Request

log = logging.getLogger("uvicorn.error")  # shown at the server's --log-level, beside the access log


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


def sampling_params(req: SamplingRequest, default: SamplingParams, limits: ServeLimits) -> SamplingParams:
    """A request's sampling over the server's defaults; a ``max_tokens`` over the limit is a 400."""
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
    from sage_dialog.backends.prompting import render_prompt

    prompt = render_prompt(tok, msgs, None)
    if limit is not None and len(prompt) > 16 * limit:
        head = len(tok(prompt[: 16 * limit], add_special_tokens=False)["input_ids"])
        if head > limit:
            return head
    return len(tok(prompt, add_special_tokens=False)["input_ids"])


async def read_body(request: Request, limit: int) -> bytes:
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


async def bounded(request: Request, work: Awaitable[Any], timeout_s: float) -> Any:
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


__all__ = ["ServeLimits", "bounded", "count_prompt_tokens", "read_body", "sampling_params"]

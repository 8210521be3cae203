"""Any OpenAI-compatible server (``openai:MODEL``) through the ``openai`` SDK's async client.

* Bounded concurrency (``concurrency``, default 16 requests in flight).
* Bounded time: ``timeout_s`` is the whole of one attempt (connect, send, every byte of the reply),
  not a limit per read, so a server that drips a byte a second cannot hold a request open; and
  ``retry_budget_s`` bounds one request from its first attempt to its last (attempts and the waits
  between them, ``Retry-After`` included): a retry whose wait would pass it is not made, the request
  fails with its last error at once.
* Retries with exponential backoff and full jitter on timeouts, connection errors, 408/409/429
  (``Retry-After`` / ``retry-after-ms`` honoured) and 5xx, and on malformed or truncated replies;
  after ``max_retries`` a typed :class:`BackendError` (``kind`` = ``timeout``, ``rate_limited``,
  ``server_error``, ``connection``, ``malformed``, ``truncated``; ``bad_request``/``auth`` are not
  retried). ``on_error="raise"`` (default) raises it once every request of the call has ended;
  ``on_error="return"`` gives the failed samples as ``Completion(finish_reason="error")`` with
  ``error`` set, so a big run never drops anything silently.
* ``n``: asked natively; when a server returns fewer choices than asked (transformers serve,
  llama.cpp, Ollama ignore ``n``) the rest is fanned out as parallel ``n=1`` requests, and later
  requests go straight to fan-out. Seeded requests are always fanned out, sample ``i`` with seed
  ``sample_seed(seed, i)``, so that a cache can ask for any sample alone.
* ``prefill``: ``prefill_mode="continue"`` (default) sends the prefill as a final assistant message
  with ``continue_final_message=true, add_generation_prompt=false`` (vLLM); ``"completions"``
  renders the prompt here with the chat template of ``tokenizer`` (a path) and uses
  ``/v1/completions`` (any server with a legacy completions endpoint, e.g. transformers serve).
* Several ``base_urls`` for one model: each request goes to the endpoint with the fewest requests
  in flight.
* The API key is read from the environment variable named by ``api_key_env`` (default
  ``OPENAI_API_KEY``); it is never logged, put in :meth:`identity`, cached or written anywhere.
* :meth:`stream` streams one sample with the SDK's ``stream=True`` (chat or completions, the
  prefill honoured). Failures before the first piece are retried like any call; a stream that
  breaks after text was yielded raises a typed :class:`BackendError` (``truncated`` when it just
  ends without a finish reason) - it is never silently restarted, since the consumer already has
  part of the text. Closing the stream closes the HTTP response (vLLM then aborts the request).
* ``json_schema`` on a request (and no prefill) is sent as ``response_format={"type":
  "json_schema", "json_schema": {"name": "answer", "schema": ..., "strict": false}}``. A server
  that rejects it with 400/422 gets the request once more without it; when that succeeds the base
  URL is remembered (for this process) as not supporting it and later requests go without.
  Whether the JSON is compact is the server's choice: start vLLM with ``--structured-outputs-config
  '{"backend": "xgrammar", "disable_any_whitespace": true}'`` (``servers.vllm_server`` does) so a
  model cannot spend ``max_tokens`` on whitespace.
* :meth:`score` uses prompt logprobs (vLLM's ``prompt_logprobs``); servers without them raise
  :class:`ScoringUnsupported`.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sage_dialog.backends import progress
from sage_dialog.backends.base import (
    Backend,
    BackendError,
    ChatRequest,
    ChatResult,
    ChatStream,
    Completion,
    ScoreRequest,
    ScoreResult,
    ScoringUnsupported,
)
from sage_dialog.core.errors import UserError
from sage_dialog.core.redact import add_secret_env

log = logging.getLogger(__name__)

RETRY_STATUS = {408, 409, 429}
DEFAULT_BASE_URL = "https://api.openai.com/v1"
# Base URLs that answered a json_schema response_format with 400/422 (and then served the same
# request without it): later requests to them go without. Per process, shared by all instances.
SCHEMA_UNSUPPORTED: set[str] = set()


def response_format(schema: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI ``response_format`` body for a JSON schema (non-strict: any valid schema works)."""
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": False}}


def _sample_seed(seed: int, index: int) -> int:
    # same derivation as the HF backend, without importing it (it imports torch)
    return (seed * 0x9E3779B97F4A7C15 + index * 0xBF58476D1CE4E5B9 + 1) % (2**31 - 1)


class _Retryable(Exception):
    def __init__(self, kind: str, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.kind = kind
        self.retry_after = retry_after


def _retry_after(headers: Any) -> float | None:
    """Seconds to wait from ``retry-after-ms`` / ``Retry-After`` (seconds or an HTTP date)."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000.0
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if not ra:
        return None
    try:
        return max(0.0, float(ra))
    except ValueError:
        try:
            dt = email.utils.parsedate_to_datetime(ra)
            return max(0.0, dt.timestamp() - time.time())
        except (TypeError, ValueError):
            return None


@dataclass
class _Endpoint:
    url: str
    client: Any = None
    in_flight: int = 0
    served: int = 0
    failures: int = 0


class OpenAIBackend(Backend):
    """OpenAI-compatible HTTP backend; see the module docstring for behaviour and options."""

    provider = "openai"

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        base_urls: Sequence[str] | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 16,
        max_retries: int = 6,
        timeout_s: float = 120.0,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        retry_after_max_s: float = 120.0,
        retry_budget_s: float = 300.0,
        on_error: str = "raise",
        prefill_mode: str = "continue",
        tokenizer: str | None = None,
        stream: bool = False,
        max_tokens_field: str = "max_tokens",
        **options: Any,
    ):
        super().__init__(model, **options)
        urls = list(base_urls or []) + ([base_url] if base_url else [])
        if not urls:
            urls = [os.environ.get("OPENAI_BASE_URL", DEFAULT_BASE_URL)]
        if on_error not in ("raise", "return"):
            raise UserError(f"backend openai:{model}: option on_error={on_error!r}: use raise or return")
        if prefill_mode not in ("continue", "completions"):
            raise UserError(
                f"backend openai:{model}: option prefill_mode={prefill_mode!r}: use continue or completions"
            )
        if prefill_mode == "completions" and not tokenizer:
            raise UserError(
                f"backend openai:{model}: prefill_mode=completions needs option tokenizer (a local path)"
            )
        if not os.environ.get(api_key_env) and any("api.openai.com" in u for u in urls):
            raise UserError(f"backend openai:{model}: environment variable {api_key_env} is not set")
        self.api_key_env = api_key_env
        add_secret_env(api_key_env)  # masked in every error text (core.redact)
        self.timeout_s = timeout_s
        self.base_urls = [u.rstrip("/") for u in urls]
        self.endpoints = [_Endpoint(u) for u in self.base_urls]
        self._clients_loop: Any = None
        self._retired: list[Any] = []
        self.concurrency = int(concurrency)
        self.max_retries = int(max_retries)
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.retry_after_max_s = retry_after_max_s
        self.retry_budget_s = float(retry_budget_s)
        self.on_error = on_error
        self.prefill_mode = prefill_mode
        self.stream_replies = stream  # generate() reads replies as streams (re-assembled)
        self.max_tokens_field = max_tokens_field
        self.tokenizer_path = tokenizer
        self._tokenizer: Any = None
        self._sem: asyncio.Semaphore | None = None
        self._sem_loop: Any = None
        self.native_n: bool | None = None  # learned: does the server honour n?
        self.retries = 0
        self.error_counts: dict[str, int] = {}

    def identity(self) -> dict[str, Any]:
        # The served model and how prompts are built; never the key, never the URL's credentials.
        return {"provider": self.provider, "model": self.model, "prefill_mode": self.prefill_mode}

    # -- plumbing ------------------------------------------------------------------------------

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._sem is None or self._sem_loop is not loop:
            self._sem = asyncio.Semaphore(self.concurrency)
            self._sem_loop = loop
        return self._sem

    def _ensure_clients(self) -> None:
        """One AsyncOpenAI client per endpoint and event loop (httpx connections are loop-bound).

        The key is read from the environment here and handed to the SDK only; this object keeps
        no copy of it.
        """
        from openai import AsyncOpenAI

        loop = asyncio.get_running_loop()
        if self._clients_loop is loop:
            return
        # Clients of an earlier (now closed) loop cannot be closed from this one; dropping them
        # makes the SDK schedule a doomed aclose() here, so keep them referenced instead.
        self._retired.extend(e.client for e in self.endpoints if e.client is not None)
        for e in self.endpoints:
            e.client = AsyncOpenAI(
                base_url=e.url,
                api_key=os.environ.get(self.api_key_env) or "EMPTY",  # local servers take any key
                max_retries=0,  # retries are ours (typed, with Retry-After)
                timeout=self.timeout_s,
            )
        self._clients_loop = loop

    def _pick(self) -> _Endpoint:
        least = min(e.in_flight for e in self.endpoints)
        return random.choice([e for e in self.endpoints if e.in_flight == least])

    def _backoff(self, attempt: int) -> float:
        return random.uniform(0, min(self.backoff_max_s, self.backoff_base_s * 2**attempt))

    def _classify(self, e: BaseException, ep: _Endpoint) -> _Retryable:
        """A failed attempt as a retryable error; raises :class:`BackendError` for final ones."""
        import httpx
        import openai

        if isinstance(e, _Retryable):
            return e
        if isinstance(e, openai.APITimeoutError):
            return _Retryable("timeout", f"{ep.url}: request timed out")
        if isinstance(e, openai.APIStatusError):
            st = e.status_code
            if st in RETRY_STATUS or st >= 500:
                kind = "rate_limited" if st == 429 else "server_error" if st >= 500 else f"http_{st}"
                return _Retryable(kind, f"{ep.url}: HTTP {st}", _retry_after(e.response.headers))
            kind = "auth" if st in (401, 403) else "bad_request"
            detail = e.body if e.body is not None else e.message
            raise BackendError(kind, f"{ep.url}: HTTP {st}: {_short(str(detail))}") from None
        if isinstance(e, openai.APIConnectionError):
            return _Retryable("connection", f"{ep.url}: {_short(str(e.__cause__ or e))}")
        if isinstance(e, httpx.TransportError):  # raised raw while reading a streamed body
            return _Retryable("connection", f"{ep.url}: {_short(str(e) or type(e).__name__)}")
        if isinstance(e, (openai.APIResponseValidationError, json.JSONDecodeError, UnicodeDecodeError)):
            return _Retryable("malformed", f"{ep.url}: malformed reply: {_short(str(e))}")
        raise e

    @staticmethod
    def _retry_on() -> tuple[type[BaseException], ...]:
        import httpx
        import openai

        return (
            openai.APIError,
            httpx.TransportError,
            json.JSONDecodeError,
            UnicodeDecodeError,
            _Retryable,
        )

    async def _wait_before_retry(self, last: _Retryable, attempt: int, started: float) -> None:
        """Sleep before the next attempt; a :class:`BackendError` instead when the wait would take
        the request past ``retry_budget_s`` (counted from ``started``, its first attempt)."""
        wait = self._backoff(attempt)
        if last.retry_after is not None:
            wait = min(self.retry_after_max_s, last.retry_after) + random.uniform(0, 0.1)
        left = self.retry_budget_s - (time.monotonic() - started)
        if wait > left:
            raise BackendError(last.kind, f"{last} (gave up after {attempt + 1} attempts: waiting {wait:.1f} s more "
                               f"would pass retry_budget_s={self.retry_budget_s:g})")
        self.retries += 1
        log.debug("retrying after %s (%.2fs, attempt %d)", last.kind, wait, attempt + 1)
        await asyncio.sleep(wait)

    async def _attempt(self, coro: Awaitable[Any], ep: _Endpoint) -> Any:
        """One attempt, all of it within ``timeout_s`` (httpx's own timeout bounds each read only)."""
        try:
            return await asyncio.wait_for(coro, self.timeout_s)
        except asyncio.TimeoutError:
            raise _Retryable("timeout", f"{ep.url}: no whole reply within timeout_s={self.timeout_s:g}") from None

    async def _call(self, fn: Any) -> Any:
        """Run ``fn(client)`` under the semaphore on the least-loaded endpoint, with retries."""
        self._ensure_clients()
        retry_on = self._retry_on()
        last: _Retryable | None = None
        started = time.monotonic()
        for attempt in range(self.max_retries + 1):
            ep = self._pick()
            try:
                async with self._semaphore():
                    ep.in_flight += 1
                    try:
                        out = await self._attempt(fn(ep.client), ep)
                    finally:
                        ep.in_flight -= 1
                ep.served += 1
                return out
            except retry_on as e:
                last = self._classify(e, ep)
            ep.failures += 1
            if attempt == self.max_retries:
                break
            await self._wait_before_retry(last, attempt, started)
        assert last is not None
        raise BackendError(last.kind, f"{last} (after {self.max_retries + 1} attempts)")

    async def _with_schema(
        self, client: Any, schema: dict[str, Any] | None, create: Callable[[dict[str, Any]], Awaitable[Any]]
    ) -> Any:
        """``create(extra_body_fields)`` with the schema's ``response_format``, falling back once.

        A 400/422 answer to a request that carried the schema is retried once without it; if that
        works the base URL is remembered in :data:`SCHEMA_UNSUPPORTED`.
        """
        import openai

        url = str(client.base_url).rstrip("/")
        if schema is None or url in SCHEMA_UNSUPPORTED:
            return await create({})
        try:
            return await create({"response_format": response_format(schema)})
        except (openai.BadRequestError, openai.UnprocessableEntityError) as e:
            first = e
        out = await create({})
        SCHEMA_UNSUPPORTED.add(url)
        log.warning(
            "%s: %s rejected response_format json_schema (HTTP %s); sending requests without it",
            self.name,
            url,
            first.status_code,
        )
        return out

    # -- generation ----------------------------------------------------------------------------

    def _sampling_body(
        self, req: ChatRequest, n: int, seed: int | None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        sp = req.sampling
        body: dict[str, Any] = {"n": n, "temperature": sp.temperature, "top_p": sp.top_p}
        body[self.max_tokens_field] = sp.max_tokens
        if sp.stop:
            body["stop"] = list(sp.stop)
        if seed is not None:
            body["seed"] = seed
        extra: dict[str, Any] = {}
        if sp.top_k > 0:
            extra["top_k"] = sp.top_k
        if sp.repetition_penalty != 1.0:
            extra["repetition_penalty"] = sp.repetition_penalty
        return body, extra

    def _render(self, req: ChatRequest | ScoreRequest, prefill: str | None) -> str:
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            from sage_dialog.backends.prompting import render_prompt

            self._tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_path)
            self._render_fn = render_prompt
        return str(self._render_fn(self._tokenizer, req.messages, prefill))

    async def _one_call(self, req: ChatRequest, n: int, seed: int | None) -> tuple[list[Completion], int]:
        """One HTTP request for up to ``n`` samples; returns the completions it got and prompt tokens."""
        body, extra = self._sampling_body(req, n, seed)
        schema = _schema_of(req)
        if self.prefill_mode == "completions":
            prompt = self._render(req, req.prefill)

            async def call(client: Any) -> Any:
                return await self._with_schema(
                    client,
                    schema,
                    lambda fmt: client.completions.create(
                        model=self.model, prompt=prompt, extra_body={**extra, **fmt}, **body
                    ),
                )

            resp = await self._call(call)
            choices = [(c.text, c.finish_reason) for c in (resp.choices or [])]
        else:
            messages = self._messages(req)
            if req.prefill:
                extra = {**extra, "continue_final_message": True, "add_generation_prompt": False}

            async def create(client: Any, fmt: dict[str, Any]) -> Any:
                if self.stream_replies:
                    return await self._streamed(client, messages, body, {**extra, **fmt})
                return await client.chat.completions.create(
                    model=self.model, messages=messages, extra_body={**extra, **fmt}, **body
                )

            async def call(client: Any) -> Any:
                return await self._with_schema(client, schema, lambda fmt: create(client, fmt))

            resp = await self._call(call)
            choices = [
                ((c.message.content if c.message else None), c.finish_reason) for c in (resp.choices or [])
            ]
        if not choices or any(t is None for t, _ in choices):
            raise BackendError("malformed", f"{self.name}: reply without choices or content")
        usage = getattr(resp, "usage", None)
        tin = int(getattr(usage, "prompt_tokens", 0) or 0)
        tout = int(getattr(usage, "completion_tokens", 0) or 0)
        comps = []
        for i, (text, reason) in enumerate(choices[:n]):
            text, cut = _cut_at_stop(str(text), req.sampling.stop)
            share = tout // len(choices) + (1 if i < tout % len(choices) else 0)
            comps.append(
                Completion(text=text, finish_reason="stop" if cut else (reason or "stop"), tokens_out=share)
            )
        return comps, tin

    @staticmethod
    def _messages(req: ChatRequest) -> list[dict[str, str]]:
        """Chat messages to send; a prefill is a final assistant message to continue."""
        messages = [dict(m) for m in req.messages]
        if req.prefill:
            messages.append({"role": "assistant", "content": req.prefill})
        return messages

    async def _open_stream(self, client: Any, req: ChatRequest, seed: int | None) -> Any:
        """Start one streamed ``n=1`` request (chat, or completions in that prefill mode)."""
        body, extra = self._sampling_body(req, 1, seed)
        schema = _schema_of(req)
        if self.prefill_mode == "completions":
            prompt = self._render(req, req.prefill)
            return await self._with_schema(
                client,
                schema,
                lambda fmt: client.completions.create(
                    model=self.model, prompt=prompt, extra_body={**extra, **fmt}, stream=True, **body
                ),
            )
        if req.prefill:
            extra = {**extra, "continue_final_message": True, "add_generation_prompt": False}
        messages = self._messages(req)
        return await self._with_schema(
            client,
            schema,
            lambda fmt: client.chat.completions.create(
                model=self.model, messages=messages, extra_body={**extra, **fmt}, stream=True, **body
            ),
        )

    async def _stream(self, request: ChatRequest, out: ChatStream) -> AsyncIterator[str]:
        """Token streaming with retries until the first piece; after it, failures are final."""
        self._ensure_clients()
        retry_on = self._retry_on()
        seed = request.sampling.seed
        # the same seed as sample `sample_offset` of a fanned-out generate() call
        s_seed = None if seed is None else _sample_seed(seed, request.sample_offset)
        yielded = False
        last: _Retryable | None = None
        started = time.monotonic()
        for attempt in range(self.max_retries + 1):
            ep = self._pick()
            t_attempt = time.monotonic()
            try:
                finish: str | None = None
                usage: Any = None
                pieces = 0
                async with self._semaphore():
                    ep.in_flight += 1
                    stream: Any = None
                    try:
                        stream = await self._attempt(self._open_stream(ep.client, request, s_seed), ep)
                        async for chunk in stream:
                            if time.monotonic() - t_attempt > self.timeout_s:  # a drip of pieces, never done
                                raise _Retryable("timeout", f"{ep.url}: stream not finished within "
                                                 f"timeout_s={self.timeout_s:g}")
                            if getattr(chunk, "usage", None):
                                usage = chunk.usage
                            for ch in chunk.choices or []:
                                delta = getattr(ch, "delta", None)
                                text = delta.content if delta is not None else getattr(ch, "text", None)
                                if ch.finish_reason:
                                    finish = ch.finish_reason
                                if text:
                                    pieces += 1
                                    yielded = True
                                    yield text
                    finally:
                        ep.in_flight -= 1
                        if stream is not None:
                            await stream.close()  # the consumer stopped or it failed: drop the response
                if finish is None:
                    raise _Retryable("truncated", f"{ep.url}: stream ended before its finish reason")
                ep.served += 1
                tout = int(getattr(usage, "completion_tokens", 0) or 0) or pieces
                out.tokens_in = int(getattr(usage, "prompt_tokens", 0) or 0)
                out.completion = Completion(text="", finish_reason=finish, tokens_out=tout)
                return
            except retry_on as e:
                last = self._classify(e, ep)
                if yielded:
                    self.error_counts[last.kind] = self.error_counts.get(last.kind, 0) + 1
                    raise BackendError(last.kind, f"{last} (after part of the reply was streamed)") from None
            ep.failures += 1
            if attempt == self.max_retries:
                break
            try:
                await self._wait_before_retry(last, attempt, started)
            except BackendError:
                self.error_counts[last.kind] = self.error_counts.get(last.kind, 0) + 1
                raise
        assert last is not None
        self.error_counts[last.kind] = self.error_counts.get(last.kind, 0) + 1
        raise BackendError(last.kind, f"{last} (after {self.max_retries + 1} attempts)")

    async def _streamed(
        self, client: Any, messages: list[dict[str, str]], body: dict[str, Any], extra: dict[str, Any]
    ) -> Any:
        """A streamed chat completion, re-assembled; a stream that ends early is ``truncated``."""
        from types import SimpleNamespace

        stream = await client.chat.completions.create(
            model=self.model, messages=messages, extra_body=extra, stream=True, **body
        )
        texts: dict[int, list[str]] = {}
        reasons: dict[int, str | None] = {}
        usage = None
        async for chunk in stream:
            if getattr(chunk, "usage", None):
                usage = chunk.usage
            for ch in chunk.choices or []:
                texts.setdefault(ch.index, [])
                if ch.delta and ch.delta.content:
                    texts[ch.index].append(ch.delta.content)
                if ch.finish_reason:
                    reasons[ch.index] = ch.finish_reason
        if not texts or any(reasons.get(i) is None for i in texts):
            raise _Retryable("truncated", "stream ended before every choice finished")
        choices = [
            SimpleNamespace(message=SimpleNamespace(content="".join(texts[i])), finish_reason=reasons[i])
            for i in sorted(texts)
        ]
        return SimpleNamespace(choices=choices, usage=usage)

    async def _samples(self, req: ChatRequest) -> ChatResult:
        """All ``req.n`` samples of one request: natively, then by fan-out for what is missing."""
        seed = req.sampling.seed
        comps: list[Completion] = []
        tin = 0
        if seed is None and self.native_n is not False and req.n > 1:
            got, tin = await self._one_call(req, req.n, None)
            if len(got) < req.n and self.native_n is None:
                log.info(
                    "%s returned %d of n=%d choices: fanning n out from now on", self.name, len(got), req.n
                )
                self.native_n = False
            elif len(got) == req.n:
                self.native_n = True
            comps.extend(got)
        missing = req.n - len(comps)
        if missing > 0:
            first = req.sample_offset + len(comps)
            seeds = [None if seed is None else _sample_seed(seed, first + i) for i in range(missing)]
            outs = await asyncio.gather(
                *(self._one_call(req, 1, s) for s in seeds), return_exceptions=self.on_error == "return"
            )
            for o in outs:
                if isinstance(o, BaseException):
                    comps.append(self._error_completion(o))
                else:
                    c, t = o
                    comps.extend(c[:1])
                    tin = tin or t
        progress.tick(requests=1, tokens=sum(c.tokens_out for c in comps))
        return ChatResult(completions=comps, tokens_in=tin)

    def _error_completion(self, e: BaseException) -> Completion:
        kind = e.kind if isinstance(e, BackendError) else type(e).__name__
        self.error_counts[kind] = self.error_counts.get(kind, 0) + 1
        return Completion(text="", finish_reason="error", tokens_out=0, error=str(e))

    async def generate(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        outs = await asyncio.gather(*(self._samples(r) for r in requests), return_exceptions=True)
        results: list[ChatResult] = []
        first_error: BaseException | None = None
        for req, o in zip(requests, outs, strict=True):
            if isinstance(o, BaseException):
                if not isinstance(o, Exception):
                    raise o  # cancellation and the like
                if self.on_error == "raise":
                    first_error = first_error or o
                    results.append(ChatResult(completions=[]))
                else:
                    results.append(ChatResult(completions=[self._error_completion(o) for _ in range(req.n)]))
            else:
                results.append(o)
        if first_error is not None:
            if isinstance(first_error, BackendError):
                self.error_counts[first_error.kind] = self.error_counts.get(first_error.kind, 0) + 1
            raise first_error
        return results

    # -- scoring -------------------------------------------------------------------------------

    async def _prompt_logprobs(self, messages: list[dict[str, str]], cont: str | None) -> list[float]:
        """Prompt-token logprobs of ``messages`` (+ assistant text ``cont``), via vLLM's extension."""
        extra: dict[str, Any] = {"prompt_logprobs": 0}
        msgs = list(messages)
        if cont:
            msgs.append({"role": "assistant", "content": cont})
            extra.update(continue_final_message=True, add_generation_prompt=False)

        async def call(client: Any) -> Any:
            return await client.chat.completions.create(
                model=self.model, messages=msgs, max_tokens=1, temperature=0.0, extra_body=extra
            )

        unsupported = (
            f"{self.name}: the server gives no prompt logprobs (vLLM does; transformers serve, "
            f"llama.cpp and OpenAI do not) - use an hf: or vllm: backend for roles that score options"
        )
        try:
            resp = await self._call(call)
        except BackendError as e:
            if e.kind == "bad_request":  # e.g. 422 "unknown field prompt_logprobs"
                raise ScoringUnsupported(f"{unsupported} ({e})") from None
            raise
        extra_fields = getattr(resp, "model_extra", None) or {}
        plp = getattr(resp, "prompt_logprobs", None) or extra_fields.get("prompt_logprobs")
        ids = getattr(resp, "prompt_token_ids", None) or extra_fields.get("prompt_token_ids")
        if plp is None:
            raise ScoringUnsupported(unsupported)
        out = []
        for i, entry in enumerate(plp):
            if not entry:
                out.append(0.0)  # the first token has no logprob
                continue
            # {token_id: {logprob, rank, decoded_token}}: take the prompt's own token
            want = str(ids[i]) if ids is not None and i < len(ids) else None
            item = entry.get(want) if want is not None else None
            if item is None:
                item = next(iter(entry.values()))
            out.append(float(item["logprob"] if isinstance(item, dict) else item.logprob))
        return out

    async def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Sum of the option tokens' prompt logprobs after ``messages`` (+ prefill): k+1 calls."""

        async def one(req: ScoreRequest) -> ScoreResult:
            msgs = [dict(m) for m in req.messages]
            base = await self._prompt_logprobs(msgs, req.prefill)
            opts = await asyncio.gather(
                *(self._prompt_logprobs(msgs, (req.prefill or "") + o) for o in req.options)
            )
            return ScoreResult(logprobs=[sum(o[len(base) :]) for o in opts], tokens_in=len(base))

        return list(await asyncio.gather(*(one(r) for r in requests)))

    async def aclose(self) -> None:
        if self._clients_loop is asyncio.get_running_loop():
            for e in self.endpoints:
                await e.client.close()
        self._clients_loop = None


def _schema_of(req: ChatRequest) -> dict[str, Any] | None:
    """The schema to enforce: none with a prefill (the answer would start mid-document)."""
    return req.json_schema if req.json_schema is not None and not req.prefill else None


def _short(s: str, n: int = 200) -> str:
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 3] + "..."


def _cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)

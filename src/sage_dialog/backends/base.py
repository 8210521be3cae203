"""The one backend protocol every stage talks to (ARCHITECTURE.md, principles 2 and 3).

Stages hand a backend a *list* of requests and await a list of results, so a batching backend
(transformers, vLLM) sees whole batches and an HTTP backend can run them concurrently. Concurrency,
batching, retries and caching live in backends, never in stages.

Two calls, and an optional third:

* :meth:`Backend.generate` - chat requests -> ``n`` completions each, with finish reason and usage.
  ``prefill`` is text the assistant turn already starts with; completions exclude it.
* :meth:`Backend.score` - log-probability of each of a fixed set of options after a prompt (for
  judges and annotators that choose from closed sets).
* :meth:`Backend.stream` - one sample of one request as text pieces (a :class:`ChatStream`), for
  interactive front ends. Every backend has it: the default generates the whole sample and yields
  it once; ``hf`` and ``openai`` stream token by token (``supports_streaming``).

Backends are named by a short spec, ``provider:model`` (``hf:PATH``, ``vllm:PATH``,
``openai:MODEL``, ``mock:`` / ``mock:FILE`` for scripted answers without a model); providers register lazily so that importing this module imports no heavy library.
"""

from __future__ import annotations

import abc
import dataclasses
import importlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sage_dialog.core.errors import UserError

Message = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": str}


@dataclass(frozen=True)
class SamplingParams:
    """Sampling settings of one request. ``top_k=0`` and ``repetition_penalty=1.0`` mean off."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stop"] = list(self.stop)
        return d


@dataclass(frozen=True)
class ChatRequest:
    """One chat generation request: ``n`` samples continuing ``messages`` (and ``prefill``)."""

    messages: tuple[Message, ...] | list[Message]
    n: int = 1
    sampling: SamplingParams = field(default_factory=SamplingParams)
    prefill: str | None = None
    # Index of the first sample wanted (not part of the key): a cache holding samples 0..3 asks
    # for n=1, sample_offset=4; seeded backends derive sample i's randomness from (seed, i).
    sample_offset: int = 0
    # A JSON schema the answer should follow. Backends with structured output / guided decoding
    # apply it (OpenAI ``response_format`` json_schema, vLLM guided JSON); others ignore it, so
    # callers still validate. Part of the cache key only when set (older keys stay valid).
    json_schema: dict[str, Any] | None = None
    # Token logprobs of each completion, with this many alternatives per token (0: the chosen token
    # only); None: off. Backends with ``supports_logprobs`` fill ``Completion.logprobs``.
    logprobs: int | None = None

    def key_dict(self) -> dict[str, Any]:
        """Everything that determines the output, for the response cache (n excluded: per sample)."""
        key: dict[str, Any] = {
            "messages": [dict(m) for m in self.messages],
            "sampling": self.sampling.as_dict(),
            "prefill": self.prefill,
        }
        if self.json_schema is not None:
            key["json_schema"] = self.json_schema
        if self.logprobs is not None:
            key["logprobs"] = self.logprobs
        return key


@dataclass
class Completion:
    """One sampled continuation (without the prefill)."""

    text: str
    finish_reason: str = "stop"  # "stop" | "length" | "error"
    tokens_out: int = 0
    cached: bool = False
    error: str | None = None  # with finish_reason "error": "kind: message" (BackendError text)
    # with ChatRequest.logprobs: one {"token", "logprob", "top_logprobs": [{"token", "logprob"}]} per token
    logprobs: list[dict[str, Any]] | None = None


@dataclass
class ChatResult:
    """The ``n`` completions of one request, and the prompt's token count."""

    completions: list[Completion]
    tokens_in: int = 0

    @property
    def texts(self) -> list[str]:
        return [c.text for c in self.completions]


@dataclass(frozen=True)
class ScoreRequest:
    """Score each option as the continuation of ``messages`` (+ ``prefill``) in the assistant turn."""

    messages: tuple[Message, ...] | list[Message]
    options: tuple[str, ...] | list[str]
    prefill: str | None = None

    def key_dict(self) -> dict[str, Any]:
        return {"messages": [dict(m) for m in self.messages], "options": list(self.options), "prefill": self.prefill}


@dataclass
class ScoreResult:
    """Summed token log-likelihood of each option, and the options' normalised probabilities."""

    logprobs: list[float]
    tokens_in: int = 0
    cached: bool = False

    @property
    def probs(self) -> list[float]:
        import math

        m = max(self.logprobs)
        ex = [math.exp(x - m) for x in self.logprobs]
        s = sum(ex)
        return [x / s for x in ex]

    @property
    def best(self) -> int:
        return max(range(len(self.logprobs)), key=lambda i: self.logprobs[i])


class BackendError(RuntimeError):
    """A model call that failed for good (after retries). ``kind`` is a short typed reason."""

    def __init__(self, kind: str, message: str):
        from sage_dialog.core.redact import redact

        self.kind = kind
        # a server may echo the key in its error body: mask secrets before the text goes anywhere
        super().__init__(redact(f"{kind}: {message}"))


class ScoringUnsupported(BackendError):
    """The backend cannot score options (e.g. a server that gives no logprobs)."""

    def __init__(self, message: str):
        super().__init__("scoring_unsupported", message)


# ---------------------------------------------------------------------------------------------
# streaming


class StopHold:
    """Cut a text stream at the first stop string without ever releasing any part of it.

    :meth:`feed` returns the text that is safe to show: everything except a tail that could still
    be the start of a stop string. Once a stop string is complete, ``stopped`` is set and the text
    before it is released; nothing after it ever is. :meth:`flush` releases the held tail when the
    stream ends without a stop.
    """

    def __init__(self, stops: Sequence[str]):
        self.stops = tuple(s for s in stops if s)
        self.buf = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        self.buf += piece
        if not self.stops:
            out, self.buf = self.buf, ""
            return out
        cut = min((i for i in (self.buf.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            out, self.buf = self.buf[:cut], ""
            return out
        # hold the longest tail that is a proper prefix of some stop string
        keep = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(self.buf)), keep, -1):
                if self.buf.endswith(s[:k]):
                    keep = k
                    break
        out = self.buf[: len(self.buf) - keep]
        self.buf = self.buf[len(self.buf) - keep :]
        return out

    def flush(self) -> str:
        out, self.buf = ("" if self.stopped else self.buf), ""
        return out


class ChatStream(AsyncIterator[str]):
    """The text pieces of one streamed sample (prefill excluded, stop strings cut off).

    Iterate it with ``async for``; when it is exhausted, :attr:`completion` holds the whole
    :class:`Completion` (text, ``finish_reason``, ``tokens_out``) and :attr:`tokens_in` the prompt
    size. Stopping early - ``break``, an exception, :meth:`aclose`, leaving ``async with`` - stops
    the generation behind it; use ``async with backend.stream(req) as s:`` (or
    :func:`contextlib.aclosing`) so that happens at once rather than when it is garbage-collected.

    Backends produce the raw pieces with an async generator (``Backend._stream``) that may write
    ``completion`` / ``tokens_in`` on this object before it ends; stop strings are applied here, so
    every backend cuts them the same way.
    """

    def __init__(self, request: ChatRequest, source: Callable[[ChatStream], AsyncIterator[str]]):
        self.request = request
        self.completion: Completion | None = None
        self.tokens_in = 0
        self._hold = StopHold(request.sampling.stop)
        self._text: list[str] = []
        self._source = source(self)
        self._done = False

    def __aiter__(self) -> ChatStream:
        return self

    async def __anext__(self) -> str:
        while not self._done:
            try:
                piece = await self._source.__anext__()
            except StopAsyncIteration:
                self._done = True
                out = self._hold.flush()
                self._text.append(out)
                self._finish(stopped=False)
                if out:
                    return out
                break
            out = self._hold.feed(piece)
            self._text.append(out)
            if self._hold.stopped:
                self._done = True
                await self._close_source()  # a stop string ends the generation now
                self._finish(stopped=True)
            if out:
                return out
        raise StopAsyncIteration

    def _finish(self, stopped: bool) -> None:
        c = self.completion or Completion(text="")
        reason = "stop" if stopped else c.finish_reason
        self.completion = dataclasses.replace(c, text="".join(self._text), finish_reason=reason)

    async def _close_source(self) -> None:
        aclose = getattr(self._source, "aclose", None)
        if aclose is not None:
            await aclose()

    async def aclose(self) -> None:
        """Stop iterating and stop the generation behind the stream (idempotent)."""
        self._done = True
        await self._close_source()

    async def __aenter__(self) -> ChatStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class Backend(abc.ABC):
    """Async, batch-first model interface. Subclasses implement ``generate`` and maybe ``score``
    and ``_stream``."""

    provider: str = "base"

    def __init__(self, model: str, **options: Any):
        # subclasses pass on the options they did not take: a misspelt option is an error, not a no-op
        if options:
            raise UserError(f"backend {self.provider}:{model}: unknown option(s) {', '.join(sorted(options))}")
        self.model = model
        self.options = options

    @property
    def name(self) -> str:
        return f"{self.provider}:{self.model}"

    def identity(self) -> dict[str, Any]:
        """What distinguishes this backend's outputs (used in cache keys). Never holds secrets."""
        return {"provider": self.provider, "model": self.model}

    def request_key(self, request: ChatRequest | ScoreRequest) -> dict[str, Any]:
        """What determines the output of ``request`` on this backend, for the response cache.

        By default the request itself (:meth:`ChatRequest.key_dict`); in-process backends add what
        they make of it (the rendered prompt: chat template, prefill healing), so a change there is
        never answered from an old entry.
        """
        return request.key_dict()

    @abc.abstractmethod
    async def generate(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        """Return one :class:`ChatResult` per request, in order, each with ``request.n`` completions."""

    async def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Return option log-likelihoods per request; raises :class:`ScoringUnsupported` by default."""
        raise ScoringUnsupported(f"backend {self.name} cannot score options")

    @property
    def supports_scoring(self) -> bool:
        return type(self).score is not Backend.score

    def stream(self, request: ChatRequest) -> ChatStream:
        """Stream one sample of ``request`` (``n`` must be 1) as text pieces; see :class:`ChatStream`.

        The prefill is honoured and not part of the pieces; stop strings end the stream and no
        part of them is ever yielded (text that could be the start of one is held back until it
        is known not to be). Backends without token streaming (``supports_streaming`` false)
        generate the whole sample and yield it once.
        """
        if request.n != 1:
            raise UserError(f"backend {self.name}: stream() gives one sample: request n={request.n}, use n=1")
        return ChatStream(request, lambda out: self._stream(request, out))

    async def _stream(self, request: ChatRequest, out: ChatStream) -> AsyncIterator[str]:
        """Raw text pieces of one sample; the default generates it whole. May set ``out.completion``."""
        [res] = await self.generate([request])
        comp = res.completions[0]
        if comp.finish_reason == "error":
            raise BackendError("error", comp.error or "generation failed")
        out.completion, out.tokens_in = comp, res.tokens_in
        if comp.text:
            yield comp.text

    @property
    def supports_streaming(self) -> bool:
        """True when :meth:`stream` yields token by token (not the default generate-then-yield)."""
        return type(self)._stream is not Backend._stream

    async def aclose(self) -> None:
        """Release servers, processes, GPU memory."""

    async def __aenter__(self) -> Backend:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


# ---------------------------------------------------------------------------------------------
# configuration and the provider registry


class BackendConfig(BaseModel):
    """A backend as written in YAML: ``spec`` (``provider:model``) plus provider options.

    ``options`` go to the provider's constructor (for example ``adapter``, ``device``, ``dtype``,
    ``batch_size`` for ``hf``; ``base_url``/``base_urls``, ``api_key_env``, ``concurrency`` for
    ``openai``). ``cache`` is a path to the shared SQLite response cache, or null for none.
    """

    model_config = ConfigDict(extra="forbid")
    spec: str
    options: dict[str, Any] = Field(default_factory=dict)
    cache: str | None = None


_PROVIDERS: dict[str, str] = {
    "hf": "sage_dialog.backends.hf:HFBackend",
    "vllm": "sage_dialog.backends.vllm_backend:VLLMBackend",
    "openai": "sage_dialog.backends.openai_backend:OpenAIBackend",
    "mock": "sage_dialog.backends.mock:MockBackend",
}
# providers whose spec may name no model (``mock:`` = the mock with its default script)
_MODEL_OPTIONAL = {"mock"}


# wraps a backend in the response cache; set by the package (``backends/__init__.py``) so that this
# module, which the cache builds on, never imports the cache (no import cycle)
_cache_wrapper: Callable[[Backend, str], Backend] | None = None


def set_cache_wrapper(wrap: Callable[[Backend, str], Backend]) -> None:
    """Install the function :func:`load_backend` wraps a backend with when a cache is configured."""
    global _cache_wrapper
    _cache_wrapper = wrap


def register_provider(name: str, target: str | Callable[..., Backend]) -> None:
    """Register a provider as ``"module:Class"`` (imported lazily) or a factory callable."""
    _PROVIDERS[name] = target  # type: ignore[assignment]


def providers() -> list[str]:
    return sorted(_PROVIDERS)


def parse_spec(spec: str) -> tuple[str, str]:
    provider, sep, model = spec.partition(":")
    if not sep or not (model or provider in _MODEL_OPTIONAL):
        raise UserError(f"backend spec {spec!r}: expected PROVIDER:MODEL, providers: {', '.join(providers())}")
    if provider not in _PROVIDERS:
        raise UserError(f"backend spec {spec!r}: unknown provider {provider!r}, known: {', '.join(providers())}")
    return provider, model


def load_backend(cfg: str | BackendConfig, **overrides: Any) -> Backend:
    """Build a backend from a spec string or a :class:`BackendConfig` (wrapped in the cache if set)."""
    if isinstance(cfg, str):
        cfg = BackendConfig(spec=cfg)
    provider, model = parse_spec(cfg.spec)
    target: Any = _PROVIDERS[provider]
    if isinstance(target, str):
        mod_name, _, attr = target.partition(":")
        try:
            target = getattr(importlib.import_module(mod_name), attr)
        except ImportError as e:
            raise UserError(
                f"backend {cfg.spec!r} needs an optional dependency that is not installed ({e.name}); "
                f"see the README's install extras"
            ) from None
    backend: Backend = target(model, **{**cfg.options, **overrides})
    if cfg.cache:
        if _cache_wrapper is None:  # cannot happen: importing this module runs the package's __init__
            raise RuntimeError("the response cache is not installed (sage_dialog.backends not initialised)")
        backend = _cache_wrapper(backend, cfg.cache)
    return backend

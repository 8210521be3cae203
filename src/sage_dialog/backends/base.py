"""The one backend protocol every stage talks to (ARCHITECTURE.md, principles 2 and 3).

Stages hand a backend a *list* of requests and await a list of results, so a batching backend
(transformers, vLLM) sees whole batches and an HTTP backend can run them concurrently. Concurrency,
batching, retries and caching live in backends, never in stages.

Two calls:

* :meth:`Backend.generate` - chat requests -> ``n`` completions each, with finish reason and usage.
  ``prefill`` is text the assistant turn already starts with; completions exclude it.
* :meth:`Backend.score` - log-probability of each of a fixed set of options after a prompt (for
  judges and annotators that choose from closed sets).

Backends are named by a short spec, ``provider:model`` (``hf:PATH``, ``vllm:PATH``,
``openai:MODEL``); providers register lazily so that importing this module imports no heavy library.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..errors import UserError

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

    def key_dict(self) -> dict[str, Any]:
        """Everything that determines the output, for the response cache (n excluded: per sample)."""
        key = {
            "messages": [dict(m) for m in self.messages],
            "sampling": self.sampling.as_dict(),
            "prefill": self.prefill,
        }
        if self.json_schema is not None:
            key["json_schema"] = self.json_schema
        return key


@dataclass
class Completion:
    """One sampled continuation (without the prefill)."""

    text: str
    finish_reason: str = "stop"  # "stop" | "length" | "error"
    tokens_out: int = 0
    cached: bool = False
    error: str | None = None  # with finish_reason "error": "kind: message" (BackendError text)


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
        self.kind = kind
        super().__init__(f"{kind}: {message}")


class ScoringUnsupported(BackendError):
    """The backend cannot score options (e.g. a server that gives no logprobs)."""

    def __init__(self, message: str):
        super().__init__("scoring_unsupported", message)


class Backend(abc.ABC):
    """Async, batch-first model interface. Subclasses implement ``_generate`` and maybe ``_score``."""

    provider: str = "base"

    def __init__(self, model: str, **options: Any):
        self.model = model
        self.options = options

    @property
    def name(self) -> str:
        return f"{self.provider}:{self.model}"

    def identity(self) -> dict[str, Any]:
        """What distinguishes this backend's outputs (used in cache keys). Never holds secrets."""
        return {"provider": self.provider, "model": self.model}

    @abc.abstractmethod
    async def generate(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        """Return one :class:`ChatResult` per request, in order, each with ``request.n`` completions."""

    async def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Return option log-likelihoods per request; raises :class:`ScoringUnsupported` by default."""
        raise ScoringUnsupported(f"backend {self.name} cannot score options")

    @property
    def supports_scoring(self) -> bool:
        return type(self).score is not Backend.score

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
}


def register_provider(name: str, target: str | Callable[..., Backend]) -> None:
    """Register a provider as ``"module:Class"`` (imported lazily) or a factory callable."""
    _PROVIDERS[name] = target  # type: ignore[assignment]


def providers() -> list[str]:
    return sorted(_PROVIDERS)


def parse_spec(spec: str) -> tuple[str, str]:
    provider, sep, model = spec.partition(":")
    if not sep or not model:
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
        from .cache import CachedBackend

        backend = CachedBackend(backend, cfg.cache)
    return backend

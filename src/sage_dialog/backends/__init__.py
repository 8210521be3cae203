"""Model backends behind one async, batch-first protocol (see :mod:`.base`)."""

from sage_dialog.backends.base import (
    Backend,
    BackendConfig,
    BackendError,
    ChatRequest,
    ChatResult,
    Completion,
    Message,
    SamplingParams,
    ScoreRequest,
    ScoreResult,
    ScoringUnsupported,
    load_backend,
    register_provider,
    set_cache_wrapper,
)
from sage_dialog.backends.cache import CachedBackend

# base.load_backend wraps with the cache; the cache builds on base, so the package connects the two
set_cache_wrapper(CachedBackend)

__all__ = [
    "Backend",
    "BackendConfig",
    "BackendError",
    "ChatRequest",
    "ChatResult",
    "Completion",
    "Message",
    "SamplingParams",
    "ScoreRequest",
    "ScoreResult",
    "ScoringUnsupported",
    "load_backend",
    "register_provider",
]

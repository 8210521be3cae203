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
)

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

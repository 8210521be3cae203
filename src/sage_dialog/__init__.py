"""sage-dialog: steerable, self-improving dialog models after SAGE (State-Action Chains).

The public API is re-exported here. Importing this package imports no torch, transformers or vllm;
heavy parts load when a backend or trainer is built.
"""

from __future__ import annotations

__version__ = "0.1.0"

from sage_dialog.backends.base import BackendConfig, ChatRequest, SamplingParams, ScoreRequest, load_backend
from sage_dialog.core.errors import UserError
from sage_dialog.core.schema import (
    Dialog,
    Manifest,
    PreferencePair,
    SearchNode,
    SelectionDecision,
    Tags,
    Turn,
    Verdict,
)

__all__ = [
    "BackendConfig",
    "ChatRequest",
    "Dialog",
    "Manifest",
    "PreferencePair",
    "SamplingParams",
    "ScoreRequest",
    "SearchNode",
    "SelectionDecision",
    "Tags",
    "Turn",
    "UserError",
    "Verdict",
    "__version__",
    "load_backend",
]

"""The roles a pipeline needs besides the assistant, as interfaces.

LLM-backed implementations live beside these in ``roles/`` (``annotator.py``, ``pairwise_judge.py``,
``selector.py``, ``user_simulator.py``), made by ``roles/factory.py``; the offline sandbox provides oracle implementations (``sandbox/oracles.py``) of the
same interfaces, so every stage runs unchanged on either. All calls take a *list* of items so an
implementation can batch them into one backend call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from sage_dialog.core.schema import Dialog, SelectionDecision, Tags, Turn, Verdict


@dataclass
class AnnotationResult:
    """Tags for each turn of one dialog (``tags[i]`` belongs to ``dialog.turns[i]``), or an error.

    ``texts`` optionally holds tidied turn texts (when the annotator may rewrite); ``raw`` keeps the
    annotator's raw answers for the rejects file.
    """

    tags: list[Tags] | None
    error: str | None = None
    texts: list[str] | None = None
    raw: list[str] = field(default_factory=list)
    attempts: int = 1


@runtime_checkable
class Annotator(Protocol):
    name: str

    async def annotate(self, dialogs: Sequence[Dialog]) -> list[AnnotationResult]:
        """Label every turn of every dialog (the annotator sees whole dialogs: future-aware)."""
        ...


@dataclass
class SelectionTask:
    """Choose the best of ``candidates`` (assistant turns, tags included) to continue ``history``."""

    history: list[Turn]
    candidates: list[Turn]
    seed: int = 0  # drives the shuffle of the shown order, so runs are reproducible


@runtime_checkable
class Selector(Protocol):
    name: str

    async def select(self, tasks: Sequence[SelectionTask]) -> list[SelectionDecision]:
        """Decide each task; ``decision.choice`` indexes ``task.candidates``."""
        ...


@dataclass
class PairTask:
    """Judge dialog (or reply) ``a`` against ``b``; ``swap`` shows ``b`` first."""

    seed: str
    model_a: str
    model_b: str
    a: list[Turn]
    b: list[Turn]
    swap: bool = False
    unit: str = "dialog"
    turn: int | None = None


@runtime_checkable
class PairwiseJudge(Protocol):
    name: str

    async def compare(self, tasks: Sequence[PairTask]) -> list[Verdict]:
        ...


@runtime_checkable
class UserSimulator(Protocol):
    name: str

    async def reply(self, dialogs: Sequence[list[Turn]], seeds: Sequence[int] | None = None) -> list[str]:
        """The next user utterance for each dialog so far (which ends with an assistant turn)."""
        ...

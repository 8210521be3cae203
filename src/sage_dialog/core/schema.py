"""Typed, versioned records that every stage reads and writes.

A dialog is a list of turns. Tags are the discrete latents of the State-Action Chain:

* on an *annotated* dialog every turn carries its own tags: a user turn's in ``state``, an assistant
  turn's in ``action``;
* on a *SAC* (chained) dialog user turns carry none and each assistant turn carries ``state`` (what it
  read in the preceding user turn) and ``action`` (what it chose to do).

Records are pydantic models so that a file is validated as it is read (``io.read_jsonl``). Every
record that goes to disk has a ``v`` field with :data:`SCHEMA_VERSION`.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1

Role = Literal["system", "user", "assistant"]
TagValue = str | list[str] | None


class Record(BaseModel):
    """Base of every on-disk record: unknown fields are errors, the schema version is written."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    v: int = SCHEMA_VERSION


class Tags(BaseModel):
    """One tag block: motivation, emotion, topics; unknown keys are kept verbatim in ``extra``.

    ``None`` means absent (rendered ``null``); an empty ``topics`` list is a real value (``[]``).
    """

    model_config = ConfigDict(extra="forbid")
    motivation: str | None = None
    emotion: str | None = None
    topics: list[str] | None = None
    extra: dict[str, TagValue] = Field(default_factory=dict)

    def is_empty(self) -> bool:
        return self.motivation is None and self.emotion is None and self.topics is None and not self.extra

    def fields(self) -> dict[str, TagValue]:
        """The three canonical fields as a plain dict (``topic`` for the list, as in the SAC syntax)."""
        return {"motivation": self.motivation, "emotion": self.emotion, "topic": self.topics}


class Turn(BaseModel):
    """One utterance. ``original_text`` keeps the source text when an annotator tidied ``text``."""

    model_config = ConfigDict(extra="forbid")
    role: Role
    text: str
    state: Tags | None = None
    action: Tags | None = None
    original_text: str | None = None


class Dialog(Record):
    """A whole conversation. ``meta`` holds provenance (source file, persona, gold labels, ...)."""

    kind: Literal["dialog"] = "dialog"
    id: str
    turns: list[Turn]
    meta: dict[str, Any] = Field(default_factory=dict)


class SelectionDecision(BaseModel):
    """What an N-way selector (judge) decided among candidates, with its evidence.

    ``order`` is the permutation shown to the judge (``order[k]`` = candidate index shown as option
    k+1). ``choice`` indexes the *candidates*, not the shown order. ``outcome`` is ``none_good`` when
    the judge said no candidate is acceptable and ``unparsed`` when its answer could not be read.
    """

    model_config = ConfigDict(extra="forbid")
    outcome: Literal["chosen", "none_good", "unparsed"]
    choice: int | None = None
    order: list[int] = Field(default_factory=list)
    raw_output: str = ""
    scores: list[float] | None = None
    judge: str = ""
    mode: Literal["generate", "logprob", "oracle"] = "generate"


class ActionBranch(BaseModel):
    """One action considered at an assistant decision of a latent search (``latent``, ``mcts``).

    ``prior`` is the model's own probability of the action (normalised over the proposals),
    ``visits`` how many replies realised it, ``value`` their mean judge value (None when the
    judge gave no scores), ``replies`` the ids of those assistant nodes, ``chosen`` whether the
    search continued with it.
    """

    model_config = ConfigDict(extra="forbid")
    action: Tags
    prior: float
    visits: int = 0
    value: float | None = None
    replies: list[str] = Field(default_factory=list)
    chosen: bool = False


class SearchNode(Record):
    """One node of a self-play search tree (a user or assistant utterance).

    The root of a tree is the seed user turn (``parent`` is None). Assistant nodes that were
    candidates at the same decision share a parent; ``kept`` marks the one the search continued from.
    A latent search also records, on the node the decision followed, the action ``branches`` it
    weighed, and on each assistant candidate the index of its ``branch`` (both absent otherwise).
    """

    kind: Literal["node"] = "node"
    id: str
    tree: str
    parent: str | None = None
    depth: int
    role: Role
    text: str
    state: Tags | None = None
    action: Tags | None = None
    kept: bool = True
    sampling: dict[str, Any] = Field(default_factory=dict)
    decision: SelectionDecision | None = None
    score: float | None = None
    model: str = ""
    branches: list[ActionBranch] | None = None
    branch: int | None = None


class PreferencePair(Record):
    """A chosen/rejected pair of assistant turns after a shared history, with provenance."""

    kind: Literal["pair"] = "pair"
    id: str
    history: list[Turn]
    chosen: Turn
    rejected: Turn
    seed: str = ""
    depth: int = 0
    margin: float | None = None
    tag_diff: list[str] = Field(default_factory=list)
    source: str = ""


class Verdict(Record):
    """A pairwise judgement of two dialogs (or two replies) by one judge in one order.

    ``winner`` is stated in terms of the *models* (``a`` is ``model_a`` whatever order they were
    shown in); ``shown_first`` says which was shown as "Dialog A". ``winner`` is None when the raw
    answer could not be parsed (``parsed`` False): it is counted, never defaulted.
    """

    kind: Literal["verdict"] = "verdict"
    seed: str
    model_a: str
    model_b: str
    judge: str
    shown_first: Literal["a", "b"]
    winner: Literal["a", "b", "tie"] | None = None  # None = unparsed (writers drop None fields)
    parsed: bool
    raw_output: str = ""
    probs: dict[str, float] | None = None
    unit: Literal["dialog", "turn"] = "dialog"
    turn: int | None = None
    length_a: int | None = None
    length_b: int | None = None


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Manifest(Record):
    """What a stage ran with: written next to its outputs, read to decide whether to re-run it."""

    kind: Literal["manifest"] = "manifest"
    stage: str
    config: dict[str, Any] = Field(default_factory=dict)
    config_hash: str = ""
    inputs: dict[str, str] = Field(default_factory=dict)
    outputs: list[str] = Field(default_factory=list)
    versions: dict[str, str] = Field(default_factory=dict)
    git_revision: str | None = None
    seed: int | None = None
    started: str = Field(default_factory=utc_now)
    finished: str | None = None
    usage: dict[str, Any] = Field(default_factory=dict)
    summary: dict[str, Any] = Field(default_factory=dict)

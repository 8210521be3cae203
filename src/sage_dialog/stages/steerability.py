"""Steerability: for a set of contexts and forced actions, how often the reply carries the action.

Each (context, action) pair is generated ``n`` times with the action forced by prefill
(:mod:`sage_dialog.roles.assistant`); a *judge* then reads only the reply text (tags removed) and says whether
it realises the forced action. The rate is reported overall and per action, with a 95% Wilson
interval. Also reported: *tag adherence*, how often the tags read back equal the forced ones (1.0
unless the model broke the block syntax), which says the prefill worked, not that the reply obeyed.

Judges:

* any callable ``judge(reply_text, forced_action) -> bool`` (the Python API);
* :class:`ClassifierJudge`: wraps a classifier with ``classify_tags(texts) -> list[Tags | None]``
  (e.g. the sandbox's ``oracle_for("action")``) and compares the forced fields;
* :class:`LLMJudge`: asks a backend "does this reply express ...? yes/no", by ``score`` (log-
  probabilities of yes/no) when the backend can, else by a greedy ``generate``;
* :class:`AnnotatorJudge`: oracle-free, for real models: the annotator (the one that labelled the
  training data, same label sets) labels the reply, and the reply followed the action when the
  label equals the forced motivation / emotion. A reply the annotator cannot label is unjudged
  (``None``: reported as such, and not followed in the rate).

The stage has the one shape (:mod:`sage_dialog.stages.base`): :class:`Settings` (a run config's
``steerability:`` section), :class:`Inputs` (the live model, contexts and judge), :class:`Result`
(the report) and :func:`run`, which writes the report JSON.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, Field

from sage_dialog.backends.base import Backend, ChatRequest, Message, SamplingParams, ScoreRequest
from sage_dialog.core.schema import Tags
from sage_dialog.roles.assistant import Candidate, format_tags, generate_turns
from sage_dialog.roles.steering import Steering
from sage_dialog.stages.base import StageResult, StageSettings

JudgeFn = Callable[[str, Tags], bool]

JUDGE_PROMPT = (
    "You check whether a chatbot reply carries out an intended action.\n\n"
    "Intended action: {action}\n\nReply: {reply}\n\n"
    "Does the reply carry out the intended action (its motivation and emotion)? Answer yes or no."
)


@runtime_checkable
class AsyncJudge(Protocol):
    """A judge that decides many (reply, action) items at once (LLM judges batch their calls)."""

    name: str

    async def judge_many(self, items: Sequence[tuple[str, Tags]]) -> list[bool | None]: ...


class ClassifierJudge:
    """Followed = the classifier reads the forced motivation and emotion (those forced) in the reply."""

    def __init__(self, classifier: Any, name: str | None = None):
        self.classifier = classifier
        self.name = name or str(getattr(classifier, "name", type(classifier).__name__))

    def __call__(self, reply: str, forced: Tags) -> bool:
        (read,) = self.classifier.classify_tags([reply])
        if read is None:
            return False
        return all(
            getattr(read, f) == getattr(forced, f) for f in ("motivation", "emotion") if getattr(forced, f) is not None
        )


def _same(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and " ".join(a.casefold().split()) == " ".join(b.casefold().split())


class AnnotatorJudge:
    """Followed = the annotator's label of the reply equals the forced fields (motivation, emotion).

    The reply is shown as the assistant turn of a two-turn dialog after ``context`` (the judge sees
    only the reply, as every judge here). Use the annotator's closed label sets, so that its labels
    and the forced actions share one vocabulary.
    """

    def __init__(self, annotator: Any, name: str | None = None, *, context: str = "Hi! What's up?"):
        self.annotator = annotator
        self.context = context
        self.name = name or f"annotator:{getattr(annotator, 'name', type(annotator).__name__)}"

    async def judge_many(self, items: Sequence[tuple[str, Tags]]) -> list[bool | None]:
        from sage_dialog.core.schema import Dialog, Turn

        dialogs = [
            Dialog(id=f"steer-{i}", turns=[Turn(role="user", text=self.context),
                                          Turn(role="assistant", text=reply.strip() or "...")])
            for i, (reply, _forced) in enumerate(items)
        ]
        results = await self.annotator.annotate(dialogs)
        out: list[bool | None] = []
        for res, (_reply, forced) in zip(results, items, strict=True):
            if res.tags is None:
                out.append(None)
                continue
            read = res.tags[1]
            out.append(all(_same(getattr(read, f), getattr(forced, f))
                           for f in ("motivation", "emotion") if getattr(forced, f) is not None))
        return out


class LLMJudge:
    """A yes/no LLM judge through the backend protocol (``score`` when supported, else ``generate``)."""

    def __init__(self, backend: Backend, *, prompt: str = JUDGE_PROMPT):
        self.backend = backend
        self.prompt = prompt
        self.name = f"llm:{backend.name}"

    def _messages(self, reply: str, forced: Tags) -> list[Message]:
        return [{"role": "user", "content": self.prompt.format(action=format_tags(forced), reply=reply)}]

    async def judge_many(self, items: Sequence[tuple[str, Tags]]) -> list[bool | None]:
        if not items:
            return []
        msgs = [self._messages(r, a) for r, a in items]
        if self.backend.supports_scoring:
            res = await self.backend.score([ScoreRequest(messages=m, options=("yes", "no")) for m in msgs])
            return [r.best == 0 for r in res]
        sp = SamplingParams(temperature=0.0, max_tokens=4)
        gen = await self.backend.generate([ChatRequest(messages=m, n=1, sampling=sp) for m in msgs])
        out: list[bool | None] = []
        for g in gen:
            word = (g.completions[0].text.strip().lower().split() or [""])[0].strip(".,!:")
            out.append(True if word == "yes" else False if word == "no" else None)  # None: unreadable, counted
        return out


class ItemResult(BaseModel):
    """One generated reply under one forced action."""

    context: int
    forced: Tags
    reply: str
    action_read: Tags | None = None
    tags_match: bool
    followed: bool | None


class Rate(BaseModel):
    n: int
    followed: int
    unjudged: int = 0
    rate: float
    ci95: tuple[float, float]


class SteerabilityReport(BaseModel):
    """Overall and per-action rates of replies that carry the forced action."""

    judge: str
    model: str
    contexts: int
    actions: int
    samples_per_pair: int
    overall: Rate
    tag_adherence: float
    per_action: dict[str, Rate] = Field(default_factory=dict)
    items: list[ItemResult] = Field(default_factory=list)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (sensible at 0 and n, unlike the normal one)."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


def _rate(vals: Sequence[bool | None]) -> Rate:
    judged = [v for v in vals if v is not None]
    k = sum(1 for v in judged if v)
    n = len(vals)  # unreadable judgements count as not followed: never silently dropped
    return Rate(n=n, followed=k, unjudged=n - len(judged), rate=k / n if n else 0.0, ci95=wilson(k, n))


def _forced_match(read: Tags | None, forced: Tags) -> bool:
    if read is None:
        return False
    return all(v is None or getattr(read, f) == v for f, v in forced.model_dump(exclude={"extra"}).items())


@dataclass
class _Pair:
    context: int
    forced: Tags
    cands: list[Candidate] = field(default_factory=list)


async def measure(
    backend: Backend,
    contexts: Sequence[Sequence[Message]],
    actions: Sequence[Tags],
    judge: JudgeFn | AsyncJudge,
    *,
    n: int = 1,
    sampling: SamplingParams | None = None,
    batch_pairs: int = 16,
    progress: bool = False,
    keep_items: bool = True,
) -> SteerabilityReport:
    """Generate ``n`` replies per (context, forced action) and report how often the judge sees the action."""
    sampling = sampling or SamplingParams(temperature=0.8, max_tokens=96)
    pairs = [_Pair(ci, a) for ci in range(len(contexts)) for a in actions]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(pairs), desc="steerability", unit="pair")
    for start in range(0, len(pairs), batch_pairs):
        chunk = pairs[start : start + batch_pairs]
        # the calls of one chunk run concurrently so a batching backend sees them together
        results = await asyncio.gather(
            *(
                generate_turns(backend, list(contexts[p.context]), steering=Steering(action=p.forced), n=n, sampling=sampling)
                for p in chunk
            )
        )
        for p, cands in zip(chunk, results, strict=True):
            p.cands = cands
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    flat = [(p, c) for p in pairs for c in p.cands]
    items_in = [(c.reply, p.forced) for p, c in flat]
    if isinstance(judge, AsyncJudge):
        verdicts = await judge.judge_many(items_in)
        judge_name = judge.name
    else:
        verdicts = [bool(judge(r, a)) for r, a in items_in]
        judge_name = str(getattr(judge, "name", getattr(judge, "__name__", "callable")))
    items = [
        ItemResult(
            context=p.context, forced=p.forced, reply=c.reply, action_read=c.action,
            tags_match=_forced_match(c.action, p.forced), followed=v,
        )
        for (p, c), v in zip(flat, verdicts, strict=True)
    ]
    per: dict[str, list[bool | None]] = {}
    for it in items:
        per.setdefault(format_tags(it.forced), []).append(it.followed)
    return SteerabilityReport(
        judge=judge_name,
        model=backend.name,
        contexts=len(contexts),
        actions=len(actions),
        samples_per_pair=n,
        overall=_rate([it.followed for it in items]),
        tag_adherence=sum(it.tags_match for it in items) / len(items) if items else 0.0,
        per_action={k: _rate(v) for k, v in per.items()},
        items=items if keep_items else [],
    )


def format_report(rep: SteerabilityReport) -> str:
    """A small text table of the report."""
    width = max([len(k) for k in rep.per_action] + [6])
    lines = [
        f"steerability of {rep.model} judged by {rep.judge}: "
        f"{rep.contexts} contexts x {rep.actions} actions x {rep.samples_per_pair} samples",
        f"{'action'.ljust(width)}  followed      rate   95% CI",
    ]
    for k, r in [*rep.per_action.items(), ("ALL", rep.overall)]:
        lines.append(f"{k.ljust(width)}  {r.followed:>4}/{r.n:<6}  {r.rate:5.2f}   [{r.ci95[0]:.2f}, {r.ci95[1]:.2f}]")
    lines.append(f"tag adherence (tags read back = forced): {rep.tag_adherence:.2f}")
    return "\n".join(lines)


class Settings(StageSettings):
    """The ``steerability`` stage: which actions are forced, on how many contexts, how often, how sampled."""

    actions: list[str] = Field(default_factory=list, description='forced actions, each "a_motivation=X a_emotion=Y" '
                               "(with none, the inputs' own actions: the command's default is the sandbox's)")
    contexts: int | None = Field(10, ge=1, description="contexts used: the first N (null: all)")
    n: int = Field(1, ge=1, description="replies per (context, action)")
    sampling: dict[str, Any] = Field(default_factory=dict, description="SamplingParams fields of the replies")


@dataclass
class Inputs:
    """What the stage reads: the model to steer, the contexts (chat messages up to a user turn), the judge,
    and forced actions given as tags (used after ``settings.actions``; e.g. a world's whole action set)."""

    model: Backend
    contexts: Sequence[Sequence[Message]]
    judge: JudgeFn | AsyncJudge
    actions: Sequence[Tags] = ()


class Result(StageResult):
    """``report``: the :class:`SteerabilityReport` (:func:`format_report` shows it). Outputs: ``report``
    (JSON). Counts: contexts, actions, replies. Quality: followed (the overall rate), unjudged,
    tag_adherence."""

    report: SteerabilityReport


def parse_actions(actions: Sequence[str], what: str = "steerability.actions") -> list[Tags]:
    """``"a_motivation=X a_emotion=Y"`` strings as forced actions (action fields only)."""
    from sage_dialog.core.errors import UserError
    from sage_dialog.roles.steering import parse_steering

    out = []
    for spec in actions:
        st = parse_steering(spec.split(), what=what)
        if st.action is None or st.state is not None:
            raise UserError(f"{what} {spec!r}: give a_* fields only (a_motivation, a_emotion, a_topic)")
        out.append(st.action)
    return out


def run(settings: Settings, *, inputs: Inputs, out: Path, progress: bool = False) -> Result:
    """Measure how often the forced actions are followed; write the report JSON to ``out``."""
    from sage_dialog.core.errors import UserError
    from sage_dialog.core.io import check_paths, write_json

    check_paths(files=[out])
    t0 = time.perf_counter()
    actions = [*parse_actions(settings.actions), *inputs.actions]
    if not actions:
        raise UserError("steerability: no actions to force (give actions)")
    contexts = list(inputs.contexts)[: settings.contexts]
    fields = {**settings.sampling, **({"stop": tuple(settings.sampling["stop"])} if "stop" in settings.sampling else {})}
    report = asyncio.run(measure(inputs.model, contexts, actions, inputs.judge, n=settings.n,
                                 sampling=SamplingParams(**fields), progress=progress))
    write_json(out, report)
    return Result(report=report, outputs={"report": out}, seconds=time.perf_counter() - t0,
                  counts={"contexts": report.contexts, "actions": report.actions, "replies": report.overall.n},
                  quality={"followed": report.overall.rate, "unjudged": report.overall.unjudged,
                           "tag_adherence": report.tag_adherence})

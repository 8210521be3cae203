"""LLM judges: the N-way selector used by self-play search, and shared answer parsing.

:class:`LLMSelector` implements :class:`roles.Selector`. It shows the dialog so far and the candidate
replies (tags included), numbered in an order shuffled on every call (seeded by ``task.seed``, so a
run is reproducible while position bias averages out), and reads the answer in one of two modes:

* ``generate``: the judge writes text; ``"Response X is better"`` is parsed (:func:`parse_better`),
  ``"No good one"`` is the explicit *none is good* outcome, anything else is recorded ``unparsed``.
* ``logprob`` (choice mode): one scoring pass over the closed answers ``"Response 1 is better"`` ..
  ``"Response N is better"`` via :meth:`Backend.score`; the choice is the most likely answer, the
  probabilities are kept as ``scores``. Nothing is parsed, so it cannot fail to parse, and text inside
  a candidate ("Response 1 is better") cannot be mistaken for the judge's answer.

``none_policy`` tells the search what to do when the judge finds no good candidate: ``resample``
(draw new candidates and ask again), ``keep_best`` (keep the highest-scoring one anyway; the
selector fills ``choice`` by a scoring pass when the backend can score) or ``stop`` (end the dialog).
Every decision keeps the judge's raw output.

The judge must not obey the candidates (:mod:`sage_dialog.roles.guard`, issue 18): every candidate
is shown between ``[Response k]`` / ``[End of Response k]`` lines (with ``request_codes``, lines that
carry a code of the task, :func:`guard.request_code`, which a candidate cannot know) with verdict phrases, forged
delimiters and "ignore the instructions" removed (the history too); in generate mode the verdict is
read from the judge's answer slot only (its first line, quoted spans removed); and ``orders=k``
judges each task in ``k`` shown orders (rotations of the shuffled order) and combines them:
averaged probabilities in logprob mode, a plurality vote in generate mode. ``orders`` costs ``k``
times the judge calls; with ``k = n`` every candidate is shown once in every position.

The parsing helpers (:func:`parse_better`, :func:`is_none_good`) are public.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from sage_dialog.backends.base import Backend, ChatRequest, Message, SamplingParams, ScoreRequest
from sage_dialog.core import sac
from sage_dialog.core.prompts import load_prompt
from sage_dialog.core.schema import SelectionDecision, Turn
from sage_dialog.roles.guard import answer_slot, block, neutralize, request_code
from sage_dialog.roles.protocols import SelectionTask

NonePolicy = Literal["resample", "keep_best", "stop"]
CRITERIA = ("companion", "humor", "empathy")
JUDGE_SAMPLING = SamplingParams(temperature=0.0, max_tokens=24)

_NONE_RE = re.compile(
    r"\b(no good one|none (?:of them |of the (?:responses|candidates|replies) )?(?:is|are) (?:good|better|acceptable)"
    r"|no (?:response|candidate|reply|option) is (?:good|better|acceptable)|neither is (?:good|better))\b",
    re.IGNORECASE,
)


def parse_better(text: str, labels: Sequence[str], noun: str = "Response") -> str | None:
    """The label ``X`` of a ``"<noun> X is better"`` answer, or None when absent or contradictory.

    Matching is case-insensitive and tolerates ``#``, ``:``, brackets and "the" (``"Response #2 is
    the better"``). Several matches count only if they agree. A bare answer consisting of just a
    label (``"2"``, ``"Response 2"``) is accepted too.
    """
    if not labels:
        return None
    alt = "|".join(re.escape(lab) for lab in sorted(labels, key=len, reverse=True))
    pat = re.compile(
        rf"\b{re.escape(noun)}\s*[#:]?\s*[\(\[]?({alt})[\)\]]?\s*(?:\)|:)?\s+is\s+(?:the\s+|clearly\s+|much\s+)?(?:better|best)\b",
        re.IGNORECASE,
    )
    found = {m.group(1).lower() for m in pat.finditer(text)}
    by_lower = {lab.lower(): lab for lab in labels}
    if len(found) == 1:
        return by_lower[found.pop()]
    if found:
        return None
    bare = re.fullmatch(rf"\s*(?:{re.escape(noun)}\s*)?[#:]?\s*[\(\[]?({alt})[\)\]]?\s*[.!]?\s*", text, re.IGNORECASE)
    return by_lower[bare.group(1).lower()] if bare else None


def is_none_good(text: str) -> bool:
    """True when the answer says no candidate is acceptable (``"No good one"`` and variants)."""
    return bool(_NONE_RE.search(text))


def shuffled_order(n: int, seed: int) -> list[int]:
    """The shown order for one call: ``order[k]`` is the candidate shown as option ``k + 1``."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order


def render_history(history: Sequence[Turn]) -> str:
    """The dialog as the judge reads it: ``User: ...`` / ``Assistant: ...`` lines, assistant tags
    shown, verdict-like text neutralized (earlier turns were candidates too)."""
    lines = []
    for t in history:
        if t.role == "system":
            continue
        text = sac.render_turn(t.text, state=t.state, action=t.action) if t.role == "assistant" else t.text
        lines.append(f"{'User' if t.role == 'user' else 'Assistant'}: {neutralize(text)}")
    return "\n".join(lines)


def render_candidates(candidates: Sequence[Turn], order: Sequence[int], noun: str = "Response",
                      code: str = "") -> str:
    """The candidates in the shown order, each between ``[Response k #code]`` / ``[End of Response k
    #code]`` lines (``code``: :func:`guard.request_code`), neutralized (:func:`guard.neutralize`)."""
    return "\n\n".join(
        block(f"{noun} {k + 1}",
              neutralize(sac.render_turn(candidates[i].text, state=candidates[i].state, action=candidates[i].action)),
              code)
        for k, i in enumerate(order)
    )


def rotations(order: Sequence[int], k: int) -> list[list[int]]:
    """``k`` shown orders: ``order`` and its rotations, spread evenly (``k = n``: every position once)."""
    n = len(order)
    k = max(1, min(k, n))
    return [list(order[(j * n) // k :]) + list(order[: (j * n) // k]) for j in range(k)]


@dataclass
class _Prepared:
    order: list[int]
    messages: list[Message]
    task: int = 0  # index of the task this shown order belongs to


class LLMSelector:
    """:class:`roles.Selector` backed by a chat model. See the module docstring for modes and policies.

    ``criteria`` is one of :data:`CRITERIA` (packaged prompt ``selector_<criteria>.txt``) or a path to
    a template with ``{history}``, ``{candidates}`` and ``{n}`` placeholders. ``orders`` (default 1)
    is the number of shown orders each task is judged in (see the module docstring).
    """

    def __init__(self, backend: Backend, criteria: str = "companion",
                 mode: Literal["generate", "logprob"] = "generate", none_policy: NonePolicy = "resample",
                 *, sampling: SamplingParams | None = None, name: str | None = None, orders: int = 1,
                 request_codes: bool = False):
        if mode not in ("generate", "logprob"):
            raise ValueError(f"mode must be 'generate' or 'logprob', not {mode!r}")
        if none_policy not in ("resample", "keep_best", "stop"):
            raise ValueError(f"none_policy must be resample, keep_best or stop, not {none_policy!r}")
        self.backend = backend
        self.criteria = criteria
        self.template = load_prompt(f"selector_{criteria}" if criteria in CRITERIA else criteria)
        for ph in ("{history}", "{candidates}"):
            if ph not in self.template:
                from sage_dialog.core.errors import UserError

                raise UserError(f"{criteria}: selector template lacks the placeholder {ph}")
        self.mode = mode
        self.none_policy: NonePolicy = none_policy
        self.sampling = sampling or JUDGE_SAMPLING
        if orders < 1:
            raise ValueError(f"orders must be at least 1, not {orders}")
        self.orders = int(orders)
        # off by default: SmolLM2-135M's decisions turned fragile with codes on the delimiter lines
        # (11 of 36 injected decisions moved, 0 without; benchmarks/RESULTS-injection.md)
        self.request_codes = bool(request_codes)
        self.name = name or f"selector:{backend.name}:{criteria}:{mode}" + (f":orders{orders}" if orders > 1 else "")

    def prompt(self, task: SelectionTask, order: Sequence[int]) -> str:
        # str.replace, not str.format: templates may show literal {tag: blocks}
        history = render_history(task.history)
        code = request_code(str(task.seed), history) if self.request_codes else ""
        return (self.template.replace("{history}", history)
                .replace("{candidates}", render_candidates(task.candidates, order, code=code))
                .replace("{n}", str(len(task.candidates))))

    def _prepare(self, task: SelectionTask) -> _Prepared:
        order = shuffled_order(len(task.candidates), task.seed)
        return _Prepared(order, [{"role": "user", "content": self.prompt(task, order)}])

    def _views(self, task: SelectionTask, base: _Prepared, i: int) -> list[_Prepared]:
        """The shown orders task ``i`` is judged in (the first is ``base``)."""
        out = [_Prepared(base.order, base.messages, i)]
        for order in rotations(base.order, self.orders)[1:]:
            out.append(_Prepared(order, [{"role": "user", "content": self.prompt(task, order)}], i))
        return out

    async def select(self, tasks: Sequence[SelectionTask]) -> list[SelectionDecision]:
        """Decide every task with one backend call (generate mode: plus one scoring call for keep_best)."""
        if self.orders > 1:
            return await self._select_orders(tasks)
        prepared = [self._prepare(t) for t in tasks]
        out: list[SelectionDecision | None] = [None] * len(tasks)
        # a single candidate needs no judge
        todo = []
        for i, (t, p) in enumerate(zip(tasks, prepared, strict=True)):
            if len(t.candidates) == 1:
                out[i] = SelectionDecision(outcome="chosen", choice=0, order=p.order, judge=self.name,
                                           mode=self.mode, raw_output="(single candidate)")
            elif not t.candidates:
                raise ValueError("a selection task needs at least one candidate")
            else:
                todo.append(i)
        if self.mode == "logprob":
            for i, d in zip(todo, await self._score([prepared[i] for i in todo]), strict=True):
                out[i] = d
        else:
            reqs = [ChatRequest(messages=prepared[i].messages, n=1,
                                sampling=_with_seed(self.sampling, tasks[i].seed)) for i in todo]
            results = await self.backend.generate(reqs) if reqs else []
            keep_best = []
            for i, r in zip(todo, results, strict=True):
                raw = r.completions[0].text if r.completions else ""
                d = self._decide(raw, prepared[i].order)
                out[i] = d
                if d.outcome == "none_good" and self.none_policy == "keep_best":
                    keep_best.append(i)
            if keep_best and self.backend.supports_scoring:
                scored = await self._score([prepared[i] for i in keep_best])
                for i, s in zip(keep_best, scored, strict=True):
                    kept = out[i]
                    assert kept is not None
                    kept.choice, kept.scores = s.choice, s.scores
        return [d for d in out if d is not None]

    def _decide(self, raw: str, order: list[int]) -> SelectionDecision:
        labels = [str(k + 1) for k in range(len(order))]
        slot = answer_slot(raw)  # the judge's own answer: not a verdict it quotes further on
        label = parse_better(slot, labels)
        if label is not None:
            return SelectionDecision(outcome="chosen", choice=order[int(label) - 1], order=order,
                                     raw_output=raw, judge=self.name, mode="generate")
        outcome: Literal["none_good", "unparsed"] = "none_good" if is_none_good(slot) else "unparsed"
        return SelectionDecision(outcome=outcome, order=order, raw_output=raw, judge=self.name, mode="generate")

    async def _select_orders(self, tasks: Sequence[SelectionTask]) -> list[SelectionDecision]:
        """Judge every task in ``self.orders`` shown orders and combine the verdicts."""
        out: list[SelectionDecision | None] = [None] * len(tasks)
        views: list[_Prepared] = []
        for i, t in enumerate(tasks):
            if not t.candidates:
                raise ValueError("a selection task needs at least one candidate")
            base = self._prepare(t)
            if len(t.candidates) == 1:
                out[i] = SelectionDecision(outcome="chosen", choice=0, order=base.order, judge=self.name,
                                           mode=self.mode, raw_output="(single candidate)")
            else:
                views.extend(self._views(t, base, i))
        per_task: dict[int, list[SelectionDecision]] = {}
        if self.mode == "logprob":
            decided = await self._score(views)
        else:
            reqs = [ChatRequest(messages=v.messages, n=1, sampling=_with_seed(self.sampling, tasks[v.task].seed))
                    for v in views]
            results = await self.backend.generate(reqs) if reqs else []
            decided = [self._decide(r.completions[0].text if r.completions else "", v.order)
                       for v, r in zip(views, results, strict=True)]
        for v, d in zip(views, decided, strict=True):
            per_task.setdefault(v.task, []).append(d)
        keep_best = []
        for i, ds in per_task.items():
            out[i] = self._combine(ds, len(tasks[i].candidates))
            if out[i].outcome == "none_good" and self.none_policy == "keep_best":  # type: ignore[union-attr]
                keep_best.append(i)
        if keep_best and self.backend.supports_scoring:
            kb_views = [v for v in views if v.task in keep_best]
            scored = await self._score(kb_views)
            for i in keep_best:
                mine = [d for v, d in zip(kb_views, scored, strict=True) if v.task == i]
                best = self._combine(mine, len(tasks[i].candidates))
                kept = out[i]
                assert kept is not None
                kept.choice, kept.scores = best.choice, best.scores
        return [d for d in out if d is not None]

    def _combine(self, ds: list[SelectionDecision], n: int) -> SelectionDecision:
        """One decision from the same task judged in several shown orders."""
        raw = " | ".join(d.raw_output for d in ds)
        first = ds[0]
        scored = [d.scores for d in ds if d.scores is not None]
        if len(scored) == len(ds):  # logprob: average the candidates' probabilities
            mean = [sum(sc[c] for sc in scored) / len(scored) for c in range(n)]
            best = max(range(n), key=lambda c: (mean[c], -first.order.index(c)))
            return SelectionDecision(outcome="chosen", choice=best, order=first.order, raw_output=raw,
                                     scores=mean, judge=self.name, mode=self.mode)
        votes: Counter[int] = Counter(d.choice for d in ds if d.outcome == "chosen" and d.choice is not None)
        nones = sum(d.outcome == "none_good" for d in ds)
        if votes and max(votes.values()) >= nones:
            top = max(votes.values())
            # a tie between candidates goes to the one the first order showed earlier
            best = min((c for c, v in votes.items() if v == top), key=first.order.index)
            return SelectionDecision(outcome="chosen", choice=best, order=first.order, raw_output=raw,
                                     judge=self.name, mode=self.mode)
        outcome: Literal["none_good", "unparsed"] = "none_good" if nones else "unparsed"
        return SelectionDecision(outcome=outcome, order=first.order, raw_output=raw, judge=self.name, mode=self.mode)

    async def _score(self, prepared: Sequence[_Prepared]) -> list[SelectionDecision]:
        if not prepared:
            return []
        reqs = [ScoreRequest(messages=p.messages, options=[f"Response {k + 1} is better" for k in range(len(p.order))])
                for p in prepared]
        results = await self.backend.score(reqs)
        out = []
        for p, r in zip(prepared, results, strict=True):
            probs = r.probs
            scores = [0.0] * len(p.order)
            for k, i in enumerate(p.order):
                scores[i] = probs[k]  # scores index the candidates, not the shown order
            best_shown = r.best
            raw = " ".join(f"{k + 1}:{lp:.4f}" for k, lp in enumerate(r.logprobs))
            out.append(SelectionDecision(outcome="chosen", choice=p.order[best_shown], order=p.order,
                                         raw_output=f"Response {best_shown + 1} is better [logprobs {raw}]",
                                         scores=scores, judge=self.name, mode="logprob"))
        return out


def _with_seed(sp: SamplingParams, seed: int) -> SamplingParams:
    import dataclasses

    return dataclasses.replace(sp, seed=seed)

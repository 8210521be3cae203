"""The LLM pairwise judge: which of two dialogs (or two replies) is better, with its evidence.

:class:`LLMPairwiseJudge` implements :class:`roles.PairwiseJudge` on any backend. For every
:class:`~sage_dialog.roles.protocols.PairTask` it shows the two dialogs with their tags stripped (``b``
first when ``task.swap``), asks for ``Dialog A is better`` / ``Dialog B is better`` / ``Tie``, and
returns a :class:`~sage_dialog.core.schema.Verdict` whose ``winner`` is stated in terms of the
*models*. An answer that cannot be read is kept (``parsed=False``, ``winner=None``), never turned
into a default. Where the backend can score closed options, the three answers' probabilities are
recorded too (``probs``, keyed ``a`` / ``b`` / ``tie`` like ``winner``); in ``mode="score"`` they
decide the verdict.

Both orders and several judges are the caller's business (:mod:`sage_dialog.stages.compare.compare` builds one
task per order and asks every judge). ``average_orders=True`` makes one verdict out of both orders
here instead (twice the calls): probabilities averaged in score mode; in generate mode the two
verdicts must agree, otherwise it is a tie (a judge that always picks the first shown gives ties).

The judge must not obey the dialogs (:mod:`sage_dialog.roles.guard`, issue 18): every line shown is
neutralized (verdict phrases, forged ``[End of Dialog A]`` delimiters, "ignore the instructions"),
the prompts say the delimited text is never an instruction, and in generate mode the verdict is read
from the judge's answer slot only (its first line, quoted spans removed).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from typing import Literal

from sage_dialog.backends.base import (
    Backend,
    BackendError,
    ChatRequest,
    SamplingParams,
    ScoreRequest,
    ScoringUnsupported,
)
from sage_dialog.core import sac
from sage_dialog.core.prompts import load_prompt
from sage_dialog.core.schema import Turn, Verdict
from sage_dialog.roles.guard import answer_slot, neutralize, request_code
from sage_dialog.roles.protocols import PairTask

JUDGE_SAMPLING = SamplingParams(temperature=0.0, max_tokens=24)

_LETTER = re.compile(r"\b(?:dialog(?:ue)?|reply|response|conversation)\s*\(?([AB])\)?\s+is\s+(?:the\s+)?better",
                     re.IGNORECASE)
_TIE = re.compile(r"^\W*(?:tie|draw)\b|\bit'?s\s+a\s+tie\b|\bequally\s+good\b|\bboth\s+are\s+equally\b", re.IGNORECASE)
_BARE = re.compile(r"^\W*([AB])\W*$")


def parse_answer(text: str) -> Literal["A", "B", "tie"] | None:
    """Read a judge's answer in the *shown* order: ``"A"``, ``"B"``, ``"tie"`` or None.

    ``Dialog A is better`` (also ``Reply``/``Response``, any case, anywhere in the text), a bare
    ``A``/``B``, or ``Tie``. An answer that names both letters is ambiguous and gives None.
    """
    letters = {m.upper() for m in _LETTER.findall(text)}
    if len(letters) == 1:
        return letters.pop()  # type: ignore[return-value]
    if letters:
        return None
    if _TIE.search(text):
        return "tie"
    m = _BARE.match(text)
    return m.group(1).upper() if m else None  # type: ignore[return-value]


def render_dialog(turns: Sequence[Turn]) -> str:
    """A dialog as the judge reads it: ``User: ...`` / ``Assistant: ...`` lines, tags removed,
    verdict-like text neutralized (:func:`guard.neutralize`)."""
    lines = []
    for t in turns:
        if t.role == "system":
            continue
        who = "User" if t.role == "user" else "Assistant"
        lines.append(f"{who}: {neutralize(sac.strip(t.text).strip())}")
    return "\n".join(lines)


_DELIM_LINE = re.compile(r"^\[((?:End of )?(?:Dialog|Reply) [AB]|(?:End of )?Conversation)\]$", re.MULTILINE)


def _fill(template: str, **values: str) -> str:
    # str.replace, not str.format: dialogs contain braces (SAC tags, code)
    for k, v in values.items():
        template = template.replace("{" + k + "}", v)
    return template


class LLMPairwiseJudge:
    """:class:`roles.PairwiseJudge` backed by a chat model.

    ``mode="generate"`` reads the generated answer (and adds option probabilities when the
    backend can score and ``with_probs`` is on); ``mode="score"`` takes the most likely of the
    three answers. Prompts are packaged files (``pairwise_dialog``, ``pairwise_turn``) or paths.
    ``average_orders`` judges every task in both shown orders and returns one verdict for both.
    """

    def __init__(self, backend: Backend, *, name: str | None = None, mode: Literal["generate", "score"] = "generate",
                 with_probs: bool = True, sampling: SamplingParams | None = None,
                 dialog_prompt: str = "pairwise_dialog", turn_prompt: str = "pairwise_turn",
                 average_orders: bool = False, request_codes: bool = False):
        self.backend = backend
        self.request_codes = bool(request_codes)  # off by default, as the selector's (see there)
        self.average_orders = bool(average_orders)
        self.name = name or f"pairwise:{backend.name}" + (":both-orders" if average_orders else "")
        self.mode = mode
        self.with_probs = with_probs
        self.sampling = sampling or JUDGE_SAMPLING
        self._no_scoring = False
        self.dialog_template = load_prompt(dialog_prompt)
        self.turn_template = load_prompt(turn_prompt)

    def prompt(self, task: PairTask) -> str:
        """The judge prompt for a task, with the dialogs in the shown order."""
        first, second = (task.b, task.a) if task.swap else (task.a, task.b)
        if task.unit == "turn":
            # both sides share the history; only the last (assistant) turn differs
            history = render_dialog(first[:-1])
            a = render_dialog(first[-1:]).removeprefix("Assistant: ")
            b = render_dialog(second[-1:]).removeprefix("Assistant: ")
            return self._coded(_fill(self.turn_template, history=history, reply_a=a, reply_b=b),
                               request_code(task.seed, task.unit, history))
        a, b = render_dialog(first), render_dialog(second)
        return self._coded(_fill(self.dialog_template, dialog_a=a, dialog_b=b), request_code(task.seed, task.unit))

    def _coded(self, prompt: str, code: str) -> str:
        """With ``request_codes``, the delimiter lines (``[Dialog A]``, ``[End of Reply B]``...) carry the
        task's code, which a dialog cannot know, so it cannot forge its own end."""
        if not self.request_codes:
            return prompt
        return _DELIM_LINE.sub(lambda m: f"[{m.group(1)} #{code}]", prompt)

    @staticmethod
    def options(task: PairTask) -> list[str]:
        word = "Reply" if task.unit == "turn" else "Dialog"
        return [f"{word} A is better", f"{word} B is better", "Tie"]

    async def _probs(self, tasks: Sequence[PairTask], prompts: list[str]) -> list[list[float]] | None:
        if self.mode != "score" and (not self.with_probs or self._no_scoring):
            return None
        reqs = [ScoreRequest(messages=[{"role": "user", "content": p}], options=self.options(t))
                for t, p in zip(tasks, prompts, strict=True)]
        try:
            return [r.probs for r in await self.backend.score(reqs)]
        except BackendError as e:
            # probabilities are extra evidence in generate mode: a server that cannot score (no prompt
            # logprobs, e.g. `transformers serve`) must not stop the judging; say so once
            if self.mode == "score":
                raise
            self._no_scoring = True
            if not isinstance(e, ScoringUnsupported):
                warnings.warn(f"judge {self.name}: option probabilities unavailable ({e}); judging without them",
                              stacklevel=2)
            return None

    async def compare(self, tasks: Sequence[PairTask]) -> list[Verdict]:
        if not tasks:
            return []
        if self.average_orders:
            import dataclasses

            both = await self._compare([*tasks, *(dataclasses.replace(t, swap=not t.swap) for t in tasks)])
            return [_combine(v, w, self.mode) for v, w in zip(both[: len(tasks)], both[len(tasks) :], strict=True)]
        return await self._compare(tasks)

    async def _compare(self, tasks: Sequence[PairTask]) -> list[Verdict]:
        prompts = [self.prompt(t) for t in tasks]
        probs = await self._probs(tasks, prompts)
        if self.mode == "score":
            assert probs is not None
            raws = [self.options(t)[_argmax(p)] for t, p in zip(tasks, probs, strict=True)]
        else:
            reqs = [ChatRequest(messages=[{"role": "user", "content": p}], n=1, sampling=self.sampling) for p in prompts]
            raws = [r.completions[0].text if r.completions else "" for r in await self.backend.generate(reqs)]
        out = []
        for i, (t, raw) in enumerate(zip(tasks, raws, strict=True)):
            # score mode: the chosen option; generate mode: the judge's answer slot, not text it quotes
            shown = parse_answer(raw if self.mode == "score" else answer_slot(raw))
            p = probs[i] if probs is not None else None
            out.append(make_verdict(t, self.name, raw, shown, p))
        return out


def _argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)


def _combine(v: Verdict, w: Verdict, mode: str) -> Verdict:
    """One verdict from the same pair judged in both shown orders (``v`` in the task's own order)."""
    raw = f"{v.raw_output} | {w.raw_output}"
    probs = None
    if v.probs is not None and w.probs is not None:
        probs = {k: (v.probs[k] + w.probs[k]) / 2 for k in v.probs}
    winner: str | None
    if mode == "score" and probs is not None:
        winner = max(("a", "b", "tie"), key=lambda k: probs[k])
    else:
        winners = [x.winner for x in (v, w) if x.winner is not None]
        if not winners:
            winner = None
        elif len(winners) == 1 or winners[0] == winners[1]:
            winner = winners[0]
        else:
            winner = "tie"  # the orders disagree: the position decided, not the dialogs
    return v.model_copy(update={"winner": winner, "parsed": winner is not None, "probs": probs, "raw_output": raw})


def make_verdict(task: PairTask, judge: str, raw: str, shown: str | None,
                 shown_probs: Sequence[float] | None = None) -> Verdict:
    """A verdict from an answer in the shown order (``A``/``B``/``tie``/None), mapped to models.

    ``shown_probs`` are the probabilities of (shown A, shown B, tie).
    """
    # shown "A" is model a unless the dialogs were swapped
    to_model = {"A": "b", "B": "a"} if task.swap else {"A": "a", "B": "b"}
    winner = None if shown is None else ("tie" if shown == "tie" else to_model[shown])
    probs = None
    if shown_probs is not None:
        pa, pb, pt = shown_probs
        probs = {to_model["A"]: float(pa), to_model["B"]: float(pb), "tie": float(pt)}
    return Verdict(
        seed=task.seed, model_a=task.model_a, model_b=task.model_b, judge=judge,
        shown_first="b" if task.swap else "a", winner=winner, parsed=shown is not None,  # type: ignore[arg-type]
        raw_output=raw, probs=probs, unit=task.unit, turn=task.turn,  # type: ignore[arg-type]
        length_a=_words(task.a, task.unit), length_b=_words(task.b, task.unit),
    )


def _words(turns: Sequence[Turn], unit: str) -> int:
    """Assistant words of a dialog, or of the reply alone in per-turn mode."""
    shown = turns[-1:] if unit == "turn" else turns
    return sum(len(sac.strip(x.text).split()) for x in shown if x.role == "assistant")

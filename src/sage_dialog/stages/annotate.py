"""Annotation: label every utterance of every dialog with motivation, emotion and topics.

The annotator sees a whole dialog in one request and answers JSON for all its turns
("future-aware": later turns inform the labels of earlier ones). :class:`LLMAnnotator` implements
:class:`roles.Annotator` on any backend:

1. it asks for JSON matching a schema built from a pydantic model (closed label sets become enums),
   and hands the schema to the backend for structured output / guided decoding where it has one;
2. it validates every answer (JSON, number of turns, fields present, values cleaned with
   :func:`sac.clean_value`, closed-set values mapped from near misses or refused), repairs what can
   be repaired locally (code fences, trailing commas, a bare list, ``topic`` for ``topics``) and
   otherwise asks again, showing the model its answer and the problems, a bounded number of times;
3. a dialog that still fails comes back with ``error`` set: :func:`run` writes it to the rejects file
   with the reason and counts it. Nothing is dropped silently.

:func:`run` is the stage: it streams the input (our Dialog JSONL, raw ShareGPT JSON,
EmpatheticDialogues CSV, ESConv JSON or a seed file) in chunks, hands each chunk to the annotator
(the backend sees the whole chunk's requests at once and runs them concurrently), writes annotated
dialogs (user turns carry ``state``, assistant turns ``action``) and prints a label-distribution
summary. Resuming is the backend cache's job: the same input annotated again makes zero model calls.
"""

from __future__ import annotations

import asyncio
import difflib
import itertools
import json
import re
import string
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from sage_dialog.backends.base import Backend, BackendConfig, BackendError, ChatRequest, SamplingParams
from sage_dialog.core import sac
from sage_dialog.core.errors import UserError, where
from sage_dialog.core.io import (
    atomic_write,
    check_paths,
    dumps,
    iter_jsonl_raw,
    new_manifest,
    read_jsonl,
    sha256_path,
    write_json,
)
from sage_dialog.core.redact import redact_obj
from sage_dialog.core.schema import Dialog, Tags, Turn, utc_now
from sage_dialog.labels import load_label_set
from sage_dialog.roles.protocols import AnnotationResult, Annotator
from sage_dialog.stages.engine import EngineSettings, engine_field, in_order

FIELDS = ("motivation", "emotion", "topics")
ROLES = ("user", "assistant")
# "auto", "seeds" (one utterance per line) or the name of a dialog format in sage_dialog.formats
InputFormat = str


# ---------------------------------------------------------------------------------------------
# label sets


@dataclass
class LabelSets:
    """Closed label sets per (role, field); a missing entry means open vocabulary.

    ``mode`` says what happens to a value outside its set: ``map`` maps near misses (case, spacing,
    plural, close spelling) onto the set and refuses the rest; ``reject`` refuses anything not in the
    set up to case and spacing. A refused value makes the answer invalid (so it is retried).
    """

    sets: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    mode: Literal["map", "reject"] = "map"
    _normed: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_spec(cls, spec: dict[str, str], mode: Literal["map", "reject"] = "map") -> LabelSets:
        """``{"assistant.motivation": "esconv_strategies", "emotion": "path/to/file.txt"}``."""
        sets: dict[tuple[str, str], list[str]] = {}
        for key, source in spec.items():
            role, dot, fld = key.rpartition(".")
            fld = "topics" if fld == "topic" else fld
            roles = (role,) if dot else ROLES
            if fld not in FIELDS or any(r not in ROLES for r in roles):
                raise UserError(
                    f"labels: bad key {key!r}; expected FIELD or ROLE.FIELD with FIELD in "
                    f"{', '.join(FIELDS)} and ROLE in {', '.join(ROLES)}"
                )
            labels = load_label_set(source)
            for r in roles:
                sets[(r, fld)] = labels
        return cls(sets, mode)

    def get(self, role: str, fld: str) -> list[str] | None:
        return self.sets.get((role, fld))

    def union(self, fld: str) -> list[str] | None:
        """The labels allowed for ``fld`` on any role, or None if some role is open."""
        per_role = [self.get(r, fld) for r in ROLES]
        if any(s is None for s in per_role):
            return None
        out: list[str] = []
        for s in per_role:
            out.extend(x for x in s or () if x not in out)
        return out

    def resolve(self, role: str, fld: str, value: str) -> str | None:
        """The label of the set that ``value`` stands for, or None if refused (open: the value)."""
        labels = self.get(role, fld)
        if labels is None:
            return value
        norm = self._normed.get((role, fld))
        if norm is None:
            norm = self._normed[(role, fld)] = {_norm(x): x for x in labels}
        hit = norm.get(_norm(value))
        if hit is not None or self.mode == "reject":
            return hit
        key = _norm(value)
        for cand in (key.rstrip("s"), key + "s"):  # plurals (case, spacing, - and _ are normalised)
            if cand in norm:
                return norm[cand]
        close = difflib.get_close_matches(key, list(norm), n=1, cutoff=0.8)
        if close:
            return norm[close[0]]
        # a value that contains exactly one label ("feeling anxious" -> "anxious")
        inside = [lab for k, lab in norm.items() if re.search(rf"\b{re.escape(k)}\b", key)]
        return inside[0] if len(inside) == 1 else None

    def describe(self) -> str:
        """Prompt text listing the closed sets."""
        lines = []
        for fld in FIELDS:
            both = self.get("user", fld), self.get("assistant", fld)
            if both[0] is not None and both[0] == both[1]:
                lines.append(f'- "{fld}" must be one of: {", ".join(both[0])}.')
                continue
            for role, labels in zip(ROLES, both, strict=True):
                if labels is not None:
                    what = "each topic" if fld == "topics" else f'"{fld}"'
                    lines.append(f"- on {role} turns, {what} must be one of: {', '.join(labels)}.")
        return "\n".join(lines)


def _norm(s: str) -> str:
    return " ".join(re.sub(r"[_\-]+", " ", s).casefold().split())


# ---------------------------------------------------------------------------------------------
# the answer schema


def answer_model(labels: LabelSets, *, tidy: bool) -> type[BaseModel]:
    """The pydantic model of an annotator's answer (closed sets as enums), for the JSON schema."""
    def typ(fld: str) -> Any:
        allowed = labels.union(fld)
        return Literal[tuple(allowed)] if allowed else str  # type: ignore[valid-type]

    turn_fields: dict[str, Any] = {
        "index": (int, ...),
        "motivation": (typ("motivation"), ...),
        "emotion": (typ("emotion"), ...),
        "topics": (list[typ("topics")], Field(..., max_length=5)),  # type: ignore[misc]
    }
    if tidy:
        turn_fields["text"] = (str, ...)
    turn = create_model("TurnLabels", __config__=ConfigDict(extra="forbid"), **turn_fields)
    return create_model("DialogLabels", __config__=ConfigDict(extra="forbid"), turns=(list[turn], ...))  # type: ignore[valid-type]


def answer_schema(labels: LabelSets, *, tidy: bool) -> dict[str, Any]:
    """The JSON schema of any dialog's answer (closed sets as enums over both roles)."""
    return answer_model(labels, tidy=tidy).model_json_schema()


def dialog_schema(labels: LabelSets, dialog: Dialog, *, tidy: bool) -> dict[str, Any]:
    """The answer schema of one dialog: exactly its turns, in order, each with its role's label sets.

    A backend with constrained decoding (``hf`` with xgrammar, ``vllm``, a structured-output
    server) cannot then write a wrong turn count, a wrong index or a label outside a closed set:
    with closed sets the answer is valid by construction. Open fields are non-empty strings of at
    most 60 characters, so a weak model cannot spend the token budget on one label.
    """

    def value(role: str, fld: str) -> dict[str, Any]:
        allowed = labels.get(role, fld)
        return {"enum": list(allowed)} if allowed else {"type": "string", "minLength": 1, "maxLength": 60}

    items = []
    for i, turn in enumerate(dialog.turns):
        props: dict[str, Any] = {
            "index": {"const": i},
            "motivation": value(turn.role, "motivation"),
            "emotion": value(turn.role, "emotion"),
            "topics": {"type": "array", "items": value(turn.role, "topics"), "maxItems": 5},
        }
        if tidy:
            props["text"] = {"type": "string"}
        items.append({"type": "object", "properties": props, "required": list(props), "additionalProperties": False})
    n = len(items)
    turns = {"type": "array", "prefixItems": items, "items": False, "minItems": n, "maxItems": n}
    return {"type": "object", "properties": {"turns": turns}, "required": ["turns"], "additionalProperties": False}


# ---------------------------------------------------------------------------------------------
# prompts


def _template(name: str) -> str:
    return resources.files("sage_dialog.prompts").joinpath(name).read_text("utf-8")


def render_dialog(dialog: Dialog) -> str:
    """The dialog as the annotator reads it: one numbered line per turn."""
    return "\n".join(f"[{i}] {t.role}: {t.text}" for i, t in enumerate(dialog.turns))


def expected_answer(dialog: Dialog, *, tidy: bool) -> str:
    """The JSON answer an annotated dialog stands for (used to write few-shot examples)."""
    turns = []
    for i, t in enumerate(dialog.turns):
        tags = (t.state if t.role == "user" else t.action) or Tags()
        item: dict[str, Any] = {"index": i, "motivation": tags.motivation, "emotion": tags.emotion,
                                "topics": tags.topics or []}
        if tidy:
            item["text"] = t.text
        turns.append(item)
    return json.dumps({"turns": turns}, ensure_ascii=False)


def load_few_shot(path: str | Path) -> list[Dialog]:
    """Few-shot examples: annotated dialogs (Dialog JSONL) whose every turn carries its tags."""
    out = []
    for i, d in enumerate(read_jsonl(path, Dialog), 1):
        for j, t in enumerate(d.turns):
            tags = t.state if t.role == "user" else t.action
            if tags is None or tags.motivation is None or tags.emotion is None:
                attr = "state" if t.role == "user" else "action"
                raise UserError(f"{where(path, i, f'turns[{j}].{attr}')}: a few-shot example needs motivation and emotion on every turn")
        out.append(d)
    return out


# ---------------------------------------------------------------------------------------------
# parsing and validating answers

_FENCE = re.compile(r"^\s*```[a-zA-Z]*\s*|\s*```\s*$")
_TRAILING_COMMA = re.compile(r",\s*([}\]])")


def _loads_lenient(text: str) -> tuple[Any, list[str]]:
    """Parse JSON from a model answer; return the value and the local repairs made."""
    repairs: list[str] = []
    s = text.strip()
    if s.startswith("```"):
        s = _FENCE.sub("", s)
        repairs.append("code fence")
    try:
        return json.loads(s), repairs
    except json.JSONDecodeError as e:
        first_err = e
    starts = [i for i in (s.find("{"), s.find("[")) if i >= 0]
    if starts:
        start = min(starts)
        end = max(s.rfind("}"), s.rfind("]"))
        if end > start:
            chunk = s[start : end + 1]
            for fix, name in ((lambda x: x, "text around the JSON"),
                              (lambda x: _TRAILING_COMMA.sub(r"\1", x), "trailing commas")):
                try:
                    value = json.loads(fix(chunk))
                except json.JSONDecodeError:
                    continue
                if chunk != s:
                    repairs.append("text around the JSON")
                if name == "trailing commas":
                    repairs.append(name)
                return value, repairs
    raise ValueError(f"not JSON: {first_err.msg} at line {first_err.lineno} column {first_err.colno}")


@dataclass
class Checked:
    """The outcome of validating one answer."""

    tags: list[Tags] | None = None
    texts: list[str] | None = None
    problems: list[str] = field(default_factory=list)
    repairs: list[str] = field(default_factory=list)
    mapped: int = 0


def _as_label(value: Any) -> str | None:
    if isinstance(value, list):
        value = ", ".join(str(x) for x in value)
    if value is None:
        return None
    # SAC-safe, and without the sentence punctuation models like to add ("Anxious!", "'venting'")
    cleaned = sac.clean_value(str(value)).strip(" .!?;'\"`*")
    return cleaned if cleaned and cleaned.lower() not in ("null", "none") else None


def check_answer(text: str, dialog: Dialog, labels: LabelSets, *, tidy: bool) -> Checked:
    """Validate (and locally repair) one annotator answer for ``dialog``."""
    out = Checked()
    try:
        data, out.repairs = _loads_lenient(text)
    except ValueError as e:
        out.problems.append(str(e))
        return out
    if isinstance(data, list):
        data = {"turns": data}
        out.repairs.append("bare list")
    if not isinstance(data, dict):
        out.problems.append(f"expected a JSON object with a 'turns' list, got {type(data).__name__}")
        return out
    items = data.get("turns")
    if items is None:
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) == 1:
            items = lists[0]
            out.repairs.append("turns under another key")
    if not isinstance(items, list):
        out.problems.append("missing the 'turns' list")
        return out
    n = len(dialog.turns)
    if len(items) != n:
        out.problems.append(f"expected {n} turns, got {len(items)}")
        return out
    # answers that number their turns are put in that order; a bad numbering is a problem
    if all(isinstance(it, dict) and isinstance(it.get("index"), int) for it in items):
        idx = [it["index"] for it in items]
        if sorted(idx) != list(range(n)):
            out.problems.append(f"turn indices {idx} are not 0..{n - 1}")
            return out
        items = sorted(items, key=lambda it: it["index"])
    tags: list[Tags] = []
    texts: list[str] = []
    for i, (it, turn) in enumerate(zip(items, dialog.turns, strict=True)):
        if not isinstance(it, dict):
            out.problems.append(f"turn {i}: expected an object, got {type(it).__name__}")
            continue
        if "topics" not in it and "topic" in it:
            it["topics"] = it["topic"]
            out.repairs.append("topic for topics")
        values: dict[str, Any] = {}
        for fld in ("motivation", "emotion"):
            if fld not in it:
                out.problems.append(f"turn {i}: missing field {fld!r}")
                continue
            val = _as_label(it[fld])
            if val is None:
                out.problems.append(f"turn {i}: empty {fld!r}")
                continue
            resolved = labels.resolve(turn.role, fld, val)
            if resolved is None:
                out.problems.append(f"turn {i}: {fld} {val!r} is not an allowed label")
                continue
            out.mapped += _norm(resolved) != _norm(val)  # near misses, not mere case or spacing
            values[fld] = resolved
        if "topics" not in it:
            out.problems.append(f"turn {i}: missing field 'topics'")
        else:
            raw = it["topics"]
            if isinstance(raw, str):
                raw = raw.split(",")
                out.repairs.append("topics as a string")
            if not isinstance(raw, list):
                out.problems.append(f"turn {i}: 'topics' must be a list")
            else:
                topics: list[str] = []
                for x in raw:
                    val = _as_label(x)
                    if val is None:
                        continue
                    resolved = labels.resolve(turn.role, "topics", val)
                    if resolved is None:
                        out.problems.append(f"turn {i}: topic {val!r} is not an allowed label")
                    elif resolved not in topics:
                        topics.append(resolved)
                values["topics"] = topics
        if tidy:
            new = it.get("text")
            texts.append(" ".join(new.split()) if isinstance(new, str) and new.strip() else turn.text)
        if len(values) == 3:
            tags.append(Tags(**values))
    if not out.problems:
        out.tags = tags
        out.texts = texts if tidy else None
    return out


# ---------------------------------------------------------------------------------------------
# the LLM annotator


class LLMAnnotator:
    """:class:`roles.Annotator` on any backend: one JSON request per dialog, validated and repaired.

    ``max_attempts`` bounds the requests per dialog (the first one plus repair requests). Requests
    are deterministic for a given dialog and answer history, so a response cache makes a re-run free.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        labels: LabelSets | None = None,
        tidy: bool = False,
        few_shot: Sequence[Dialog] = (),
        max_attempts: int = 3,
        temperature: float = 0.0,
        max_tokens_per_turn: int = 48,
        template: str | None = None,
        json_prefill: bool = False,
    ):
        if max_attempts < 1:
            raise UserError("annotator: max_attempts must be at least 1")
        self.backend = backend
        self.labels = labels or LabelSets()
        self.tidy = tidy
        self.few_shot = list(few_shot)
        self.max_attempts = max_attempts
        self.temperature = temperature
        self.max_tokens_per_turn = max_tokens_per_turn
        # Start the answer with the JSON it must begin with: a small chat model (SmolLM2-135M) asked
        # for JSON otherwise goes on with the dialog it was shown (0 of 10 valid).
        self.prefill = JSON_PREFILL if json_prefill else None
        self.template = string.Template(template if template is not None else _template("annotator.txt"))
        self.schema = answer_schema(self.labels, tidy=tidy)
        self.name = f"llm:{backend.name}"
        self.stats: Counter[str] = Counter()

    # -- requests

    def system_prompt(self, dialog: Dialog) -> str:
        n = len(dialog.turns)
        rules = self.labels.describe()
        return self.template.safe_substitute(
            n_turns=n,
            last_turn=n - 1,
            label_rules=(rules + "\n") if rules else "",
            tidy_rules=_template("annotator_tidy.txt") if self.tidy else "",
            tidy_field=', "text": "..."' if self.tidy else "",
        )

    def messages(self, dialog: Dialog) -> list[dict[str, str]]:
        msgs = [{"role": "system", "content": self.system_prompt(dialog)}]
        for ex in self.few_shot:
            msgs.append({"role": "user", "content": render_dialog(ex)})
            msgs.append({"role": "assistant", "content": expected_answer(ex, tidy=self.tidy)})
        msgs.append({"role": "user", "content": render_dialog(dialog)})
        return msgs

    def _request(self, dialog: Dialog, messages: list[dict[str, str]], scale: int = 1) -> ChatRequest:
        n = len(dialog.turns)
        budget = (64 + self.max_tokens_per_turn * n) * scale
        if self.tidy:
            budget += sum(len(t.text) for t in dialog.turns) // 2  # room to rewrite the text
        sampling = SamplingParams(temperature=self.temperature, max_tokens=budget)
        # structured output / guided decoding where the backend has it (closed label sets then give
        # valid labels by construction; a prefill turns it off); the answer is validated anyway
        schema = dialog_schema(self.labels, dialog, tidy=self.tidy)
        return ChatRequest(messages=messages, sampling=sampling, json_schema=schema, prefill=self.prefill)

    # -- the protocol

    async def annotate(self, dialogs: Sequence[Dialog]) -> list[AnnotationResult]:
        """Annotate all ``dialogs``; every attempt round goes to the backend as one list."""
        convs = [self.messages(d) for d in dialogs]
        raws: list[list[str]] = [[] for _ in dialogs]
        results: list[AnnotationResult | None] = [None] * len(dialogs)
        last_problems: list[list[str]] = [[] for _ in dialogs]
        pending = list(range(len(dialogs)))
        scale = [1] * len(dialogs)  # token budget multiplier, doubled after an answer was cut off
        for attempt in range(1, self.max_attempts + 1):
            if not pending:
                break
            reqs = [self._request(dialogs[i], convs[i], scale[i]) for i in pending]
            try:
                answers = await self.backend.generate(reqs)
            except BackendError as e:
                for i in pending:
                    last_problems[i] = [f"backend error: {e}"]
                self.stats["backend_errors"] += len(pending)
                break
            still: list[int] = []
            for i, res in zip(pending, answers, strict=True):
                comp = res.completions[0] if res.completions else None
                self.stats["requests"] += 1
                if comp is not None and comp.cached:
                    self.stats["cached"] += 1
                text = (self.prefill or "") + comp.text if comp is not None else ""
                raws[i].append(text)
                if comp is None or comp.finish_reason == "error":
                    problems = [f"backend error: {(comp.error if comp else None) or text or 'no completion'}"]
                    chk = Checked(problems=problems)
                else:
                    chk = check_answer(text, dialogs[i], self.labels, tidy=self.tidy)
                    if comp.finish_reason == "length" and chk.problems:
                        chk.problems.insert(0, "answer cut off at the token limit")
                        scale[i] *= 2
                if chk.tags is not None:
                    if chk.repairs:
                        self.stats["repaired_locally"] += 1
                    self.stats["mapped_labels"] += chk.mapped
                    results[i] = AnnotationResult(tags=chk.tags, texts=chk.texts, raw=raws[i], attempts=attempt)
                    continue
                last_problems[i] = chk.problems
                still.append(i)
                backend_failed = comp is None or comp.finish_reason == "error"
                # a failed call is simply sent again; a bad answer is shown to the model with its problems
                if attempt < self.max_attempts and not backend_failed:
                    repair = string.Template(_template("annotator_repair.txt")).safe_substitute(
                        problems="\n".join(f"- {p}" for p in chk.problems[:10]), n_turns=len(dialogs[i].turns)
                    )
                    convs[i] = [*convs[i], {"role": "assistant", "content": text}, {"role": "user", "content": repair}]
            pending = still
        out: list[AnnotationResult] = []
        for i, r in enumerate(results):
            if r is None:
                attempts = len(raws[i])
                r = AnnotationResult(tags=None, error="; ".join(last_problems[i][:5]) or "no answer",
                                     raw=raws[i], attempts=attempts)
            out.append(r)
        return out


class ScoringAnnotator:
    """:class:`roles.Annotator` that *chooses* each closed label by the backend's option scores.

    For every turn and every closed field (motivation, emotion) it scores each label of the set as
    the answer to "the FIELD is ..." about that message (with the turn before it as context) and
    takes the most likely one, calibrated against the label's score for a content-free message
    (small models prefer some labels whatever the message): the labels are valid
    by construction, with no JSON to write or repair, which is what a small model (SmolLM2-135M)
    can do. Topics are not chosen this way (an open vocabulary): they are left empty. Needs closed
    sets for motivation and emotion on both roles and a backend that can score (``hf``, ``vllm``).
    """

    FIELDS = ("motivation", "emotion")

    def __init__(self, backend: Backend, labels: LabelSets):
        missing = [f"{r}.{f}" for r in ROLES for f in self.FIELDS if labels.get(r, f) is None]
        if missing:
            raise UserError(f"annotate: mode=score needs closed label sets for {', '.join(missing)} "
                            f"(labels: {{motivation: SET, emotion: SET}})")
        if not backend.supports_scoring:
            raise UserError(f"annotate: mode=score needs a backend that scores options; {backend.name} cannot")
        self.backend = backend
        self.labels = labels
        self.name = f"llm-score:{backend.name}"
        self.stats: Counter[str] = Counter()

    def _request(self, dialog: Dialog, i: int, fld: str) -> Any:
        from sage_dialog.backends.base import ScoreRequest

        turn = dialog.turns[i]
        options = self.labels.get(turn.role, fld) or []
        # One short prompt per turn, not the whole dialog: each option is scored after the prompt, so
        # the prompt's length is paid once per label (the whole dialog made it ~6x slower on CPU).
        text = turn.text if len(turn.text) <= 400 else turn.text[:400] + " ..."
        before = f'(after: "{dialog.turns[i - 1].text[:200]}") ' if i > 0 else ""
        question = (f'{before}The {turn.role} says: "{text}"\nWhich {fld} fits this message best? '
                    f"One of: {', '.join(options)}.")
        return ScoreRequest(messages=[{"role": "system", "content": "You label chat messages."},
                                      {"role": "user", "content": question}],
                            options=[f" {o}" for o in options], prefill=f"The {fld} is")

    async def annotate(self, dialogs: Sequence[Dialog]) -> list[AnnotationResult]:
        keys = [(d, i, f) for d in range(len(dialogs)) for i in range(len(dialogs[d].turns)) for f in self.FIELDS]
        # contextual calibration (Zhao et al., 2021): a small model prefers some labels whatever the
        # message says; each label's score for a content-free message ("N/A") is subtracted
        blank = {(r, f): Dialog(id="calibration", turns=[Turn(role=r, text="N/A")])  # type: ignore[arg-type]
                 for r in ROLES for f in self.FIELDS}
        calib_keys = list(blank)
        reqs = [self._request(dialogs[d], i, f) for d, i, f in keys]
        reqs += [self._request(blank[k], 0, k[1]) for k in calib_keys]
        try:
            scores = await self.backend.score(reqs)
        except BackendError as e:
            return [AnnotationResult(tags=None, error=f"backend error: {e}") for _ in dialogs]
        prior = dict(zip(calib_keys, scores[len(keys):], strict=True))
        chosen: dict[tuple[int, int, str], str] = {}
        for (d, i, f), sc in zip(keys, scores[: len(keys)], strict=True):
            role = dialogs[d].turns[i].role
            options = self.labels.get(role, f) or []
            base = prior[(role, f)].logprobs
            calibrated = [lp - b for lp, b in zip(sc.logprobs, base, strict=True)]
            best = max(range(len(options)), key=calibrated.__getitem__)
            chosen[(d, i, f)] = options[best]
            self.stats["requests"] += 1
        return [
            AnnotationResult(tags=[Tags(motivation=chosen[(d, i, "motivation")], emotion=chosen[(d, i, "emotion")],
                                        topics=[]) for i in range(len(dialog.turns))])
            for d, dialog in enumerate(dialogs)
        ]


# ---------------------------------------------------------------------------------------------
# reading inputs


def _resolve_format(path: Path, fmt: str) -> str:
    """The format name to read ``path`` with: ``seeds`` or a dialog format of :mod:`sage_dialog.formats`."""
    if fmt == "dialog":
        return "dialogs"  # the short spelling
    if fmt != "auto":
        return fmt
    if path.is_file() and path.suffix.lower() in (".tsv", ".txt"):
        return "seeds"  # the original test_sent.tsv: one utterance per line
    from sage_dialog.formats import detect_format

    return detect_format(path)


def load_dialogs(path: str | Path, fmt: InputFormat = "auto") -> Iterator[Dialog]:
    """Stream dialogs from ``path``: a seed file (``seeds``) or any dialog format sage-dialog reads
    (Dialog JSONL, ShareGPT JSON, TRL messages, a LLaMA-Factory folder, transcripts,
    EmpatheticDialogues CSV, ESConv JSON); ``auto`` detects it as ``sage-dialog convert`` does."""
    from sage_dialog.formats import get_format, read_records

    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: no such file")
    name = _resolve_format(p, fmt)
    if name == "seeds":
        from sage_dialog.formats.empathetic import seed_dialogs

        yield from seed_dialogs(p)
        return
    if get_format(name).kind != "dialog":
        raise UserError(f"{p}: format {name} holds no dialogs")
    yield from read_records(p, name)


def _count(path: Path, fmt: InputFormat) -> int:
    """Number of dialogs, for the progress bar's ETA (JSONL lines are counted without parsing records)."""
    if _resolve_format(path, fmt) == "dialogs":
        return sum(1 for _ in iter_jsonl_raw(path))
    return sum(1 for _ in load_dialogs(path, fmt))  # whole-document formats: a second, cheap read


def _chunks(it: Iterable[Dialog], size: int) -> Iterator[list[Dialog]]:
    buf: list[Dialog] = []
    for d in it:
        buf.append(d)
        if len(buf) >= size:
            yield buf
            buf = []
    if buf:
        yield buf


# ---------------------------------------------------------------------------------------------
# the stage


# the start of every answer (see answer_model), prefilled with ``json_prefill``
JSON_PREFILL = '{"turns": [{"index": 0, "motivation": "'


class AnnotateConfig(BaseModel):
    """Settings of ``sage-dialog annotate`` (also usable from Python: ``annotate.run(cfg)``)."""

    model_config = ConfigDict(extra="forbid")
    input: Path = Field(description="dialogs to annotate")
    output: Path = Field(description="annotated Dialog JSONL to write")
    annotator: str | BackendConfig = Field(description='"oracle" or a backend spec (hf:PATH, vllm:PATH, openai:MODEL, '
                                           'mock:FILE)')
    input_format: InputFormat = Field("auto", description="auto (detected), seeds (one utterance per line), or a "
                                      "dialog format of `sage-dialog convert --help`: dialogs, sharegpt, trl-sft, "
                                      "llamafactory-sft, transcripts, empathetic, esconv, ...")
    rejects: Path | None = Field(None, description="rejects JSONL (default: OUTPUT.rejects.jsonl)")
    summary: Path | None = Field(None, description="summary JSON (default: OUTPUT.summary.json)")
    sharegpt_output: Path | None = Field(None, description="also write the original annotated ShareGPT JSON")
    sac_output: Path | None = Field(None, description="also chain the result into SAC dialogs (Dialog .jsonl, or "
                                    "chained ShareGPT .json)")
    labels: dict[str, str] = Field(default_factory=dict, description="closed label set for FIELD or ROLE.FIELD "
                                   "(motivation, emotion, topics; user, assistant): a shipped set "
                                   "(esconv_strategies, empathetic_emotions) or a file, one label per line")
    closed: Literal["map", "reject"] = Field("map", description="closed sets: map near misses onto the set or "
                                             "refuse them")
    tidy: bool = Field(False, description="let the annotator tidy text and add a bridging question (original kept "
                       "in original_text)")
    few_shot: Path | None = Field(None, description="annotated Dialog JSONL used as few-shot examples")
    prompt: Path | None = Field(None, description="a custom annotator prompt template (string.Template)")
    max_attempts: int = Field(3, ge=1, description="requests per dialog, repairs included")
    temperature: float = Field(0.0, ge=0, description="sampling temperature of the annotator")
    max_tokens_per_turn: int = Field(48, ge=8, description="answer length allowed per dialog turn")
    mode: Literal["generate", "score"] = Field(
        "generate", description="generate: a JSON answer per dialog; score: choose each closed label by the "
        "backend's option scores (valid by construction; topics left empty)")
    json_prefill: bool = Field(False, description="start each answer with its JSON head (for small models that "
                               "otherwise continue the dialog; backends without constrained decoding)")
    chunk_size: int = Field(64, ge=1, description="dialogs handed to the backend at once")
    cache: str | None = Field(None, description="response cache (SQLite) path; re-runs take answers from it")
    backend_options: dict[str, Any] = Field(default_factory=dict, description="backend constructor options, e.g. "
                                            "base_url=http://127.0.0.1:8000/v1")
    limit: int | None = Field(None, ge=1, description="annotate only the first N dialogs")
    threads: int | None = Field(None, ge=1, description="CPU threads for torch/BLAS (default: OMP_NUM_THREADS, "
                                "else the cores not busy now, at least 1)")
    engine: EngineSettings = engine_field()

    def _beside_output(self, suffix: str) -> Path:
        if not self.output.name:  # ".", "/", "..": a folder, and no name to put beside it
            raise UserError(f"{self.output}: is a folder, expected an output file")
        return self.output.with_name(self.output.name.removesuffix(".jsonl") + suffix)

    def rejects_path(self) -> Path:
        return self.rejects or self._beside_output(".rejects.jsonl")

    def summary_path(self) -> Path:
        return self.summary or self._beside_output(".summary.json")


def build_annotator(cfg: AnnotateConfig, ledger: Any = None) -> tuple[Annotator, Backend | None]:
    """The annotator a config names, and the backend to close afterwards (None for the oracle).

    ``ledger`` (a :class:`backends.ledger.Ledger`) counts the backend's calls, cache hits included.
    """
    labels = LabelSets.from_spec(cfg.labels, cfg.closed)  # checked first: a bad set is an error for any annotator
    if cfg.annotator == "oracle":
        llm_only = [k for k in ("few_shot", "prompt") if getattr(cfg, k)] + (["labels"] if cfg.labels else []) \
            + (["tidy"] if cfg.tidy else [])
        if llm_only:
            raise UserError(f"annotator 'oracle': option(s) {', '.join(llm_only)} only apply to an LLM annotator")
        from sage_dialog.roles.factory import oracle

        return oracle("annotator"), None
    from sage_dialog.backends.base import load_backend

    bcfg = cfg.annotator if isinstance(cfg.annotator, BackendConfig) else BackendConfig(spec=cfg.annotator)
    if cfg.cache and not bcfg.cache:
        bcfg = bcfg.model_copy(update={"cache": cfg.cache})
    options = {**bcfg.options, **cfg.backend_options}
    if bcfg.spec.startswith("openai:"):
        # one failed request rejects its dialog (with the reason), not the whole chunk
        options.setdefault("on_error", "return")
    bcfg = bcfg.model_copy(update={"options": options})
    # every input is checked before a model is loaded
    few = load_few_shot(cfg.few_shot) if cfg.few_shot else []
    template = None
    if cfg.prompt:
        try:
            template = cfg.prompt.read_text(encoding="utf-8")
        except (FileNotFoundError, IsADirectoryError):
            raise UserError(f"{cfg.prompt}: no such prompt file") from None
    if cfg.mode == "score":  # checked before the model loads
        missing = [f"{r}.{f}" for r in ROLES for f in ScoringAnnotator.FIELDS if labels.get(r, f) is None]
        if missing:
            raise UserError(f"annotate: mode=score needs closed label sets for {', '.join(missing)} "
                            f"(labels: {{motivation: SET, emotion: SET}})")
    backend = load_backend(bcfg)
    if ledger is not None:
        backend = ledger.track(backend)  # outermost, so it sees cache hits
    if cfg.mode == "score":
        return ScoringAnnotator(backend, labels), backend
    ann = LLMAnnotator(backend, labels=labels, tidy=cfg.tidy, few_shot=few, max_attempts=cfg.max_attempts,
                       temperature=cfg.temperature, max_tokens_per_turn=cfg.max_tokens_per_turn, template=template,
                       json_prefill=cfg.json_prefill)
    return ann, backend


def apply_result(dialog: Dialog, result: AnnotationResult) -> Dialog:
    """The annotated copy of ``dialog``: tags on turns, tidied text with the original kept."""
    assert result.tags is not None
    turns = []
    for i, (t, tags) in enumerate(zip(dialog.turns, result.tags, strict=True)):
        new = t.model_copy()
        new.state, new.action = (tags, None) if t.role == "user" else (None, tags)
        if result.texts is not None and result.texts[i] != t.text:
            new.original_text = t.original_text or t.text
            new.text = result.texts[i]
        turns.append(new)
    return dialog.model_copy(update={"turns": turns})


def _check_result(dialog: Dialog, result: AnnotationResult) -> str | None:
    """A reason to reject what an annotator returned (any annotator, oracle included)."""
    if result.tags is None:
        return result.error or "annotator gave no tags"
    if len(result.tags) != len(dialog.turns):
        return f"annotator gave {len(result.tags)} tag sets for {len(dialog.turns)} turns"
    if result.texts is not None and len(result.texts) != len(dialog.turns):
        return f"annotator gave {len(result.texts)} texts for {len(dialog.turns)} turns"
    return None


def _reason_kind(reason: str) -> str:
    """A short category of a rejection reason, for the summary."""
    r = reason.lower()
    for key, kind in (("backend error", "backend_error"), ("cut off", "truncated"), ("not json", "malformed_json"),
                      ("expected a json object", "malformed_json"), ("expected", "wrong_turn_count"),
                      ("missing", "missing_field"), ("empty", "missing_field"), ("not an allowed", "label_not_allowed"),
                      ("indices", "bad_indices")):
        if key in r:
            return kind
    return "other"


class Summary:
    """Counts and label distributions of one annotation run."""

    def __init__(self) -> None:
        self.dialogs = 0
        self.annotated = 0
        self.rejected = 0
        self.turns = 0
        self.reasons: Counter[str] = Counter()
        self.attempts: Counter[int] = Counter()
        self.labels: dict[str, Counter[str]] = {f"{r}.{f}": Counter() for r in ROLES for f in FIELDS}
        self.tidied = 0
        self.repaired = 0

    def add(self, dialog: Dialog, result: AnnotationResult, reason: str | None) -> None:
        self.dialogs += 1
        self.attempts[result.attempts] += 1
        if reason is not None:
            self.rejected += 1
            self.reasons[_reason_kind(reason)] += 1
            return
        self.annotated += 1
        self.repaired += result.attempts > 1
        for t in dialog.turns:
            self.turns += 1
            tags = t.state if t.role == "user" else t.action
            if t.original_text is not None:
                self.tidied += 1
            if tags is None:
                continue
            self.labels[f"{t.role}.motivation"][tags.motivation or "null"] += 1
            self.labels[f"{t.role}.emotion"][tags.emotion or "null"] += 1
            for x in tags.topics or []:
                self.labels[f"{t.role}.topics"][x] += 1

    def as_dict(self, top: int = 20) -> dict[str, Any]:
        return {
            "dialogs": self.dialogs,
            "annotated": self.annotated,
            "rejected": self.rejected,
            "reject_reasons": dict(self.reasons.most_common()),
            "turns": self.turns,
            "tidied_turns": self.tidied,
            "repaired_by_retry": self.repaired,
            "attempts": {str(k): v for k, v in sorted(self.attempts.items())},
            "labels": {k: dict(c.most_common(top)) for k, c in self.labels.items() if c},
            "distinct_labels": {k: len(c) for k, c in self.labels.items() if c},
        }

    def render(self, top: int = 8) -> str:
        d = self.as_dict(top)
        lines = [f"annotated {d['annotated']} of {d['dialogs']} dialogs ({d['turns']} turns); "
                 f"rejected {d['rejected']}" + (f" {d['reject_reasons']}" if d["rejected"] else "")]
        for key, counts in d["labels"].items():
            total = sum(self.labels[key].values())
            shown = ", ".join(f"{lab} {100 * n / total:.0f}%" for lab, n in counts.items())
            lines.append(f"  {key} ({d['distinct_labels'][key]} distinct): {shown}")
        return "\n".join(lines)


COUNT_KEYS = ("dialogs", "annotated", "rejected", "repaired_by_retry", "repaired_locally")


def add_counts(counts: dict[str, Any], summary_file: dict[str, Any]) -> dict[str, Any]:
    """``counts`` plus the quality counts of one annotation summary file (for a stage over several files):
    dialogs, annotated (valid), rejected, repaired (by a retry or locally), and tokens/s."""
    s, usage = summary_file.get("summary", {}), summary_file.get("usage", {})
    out = {k: counts.get(k, 0) + int(s.get(k, 0)) for k in COUNT_KEYS}
    speed = usage.get("ledger", {}).get("tokens_per_s")
    if speed is not None:
        out["tokens_per_s"] = speed  # the last file's; files are annotated one after another
    return out


def write_sharegpt_annotated(path: Path, dialogs: Sequence[Dialog]) -> None:
    """The original annotated ShareGPT file: every value prefixed by its ``{motivation: ...}`` block."""
    from sage_dialog.formats.sharegpt import write_sharegpt

    write_sharegpt(path, dialogs, style="annotated")


async def _run_async(cfg: AnnotateConfig, annotator: Annotator, total: int, quiet: bool) -> dict[str, Any]:
    from tqdm import tqdm

    summary = Summary()
    keep_for_sharegpt: list[Dialog] = []
    usage_before = Counter(getattr(annotator, "stats", Counter()))
    dialogs = load_dialogs(cfg.input, cfg.input_format)
    if cfg.limit:
        dialogs = itertools.islice(dialogs, cfg.limit)
        total = min(total, cfg.limit)
    from sage_dialog.backends import progress

    with atomic_write(cfg.output) as out, atomic_write(cfg.rejects_path()) as rej, \
            tqdm(total=total, unit="dialog", desc="annotate", file=sys.stderr, dynamic_ncols=True,
                 disable=quiet) as bar, progress.listen(progress.Meter(bar)) as meter:
        # the bar counts dialogs per chunk; its postfix moves with every request and token inside one
        window = getattr(annotator, "parallel_chunks", 1)  # a Ray annotator keeps all its workers busy
        async for chunk, results in in_order(annotator.annotate, _chunks(dialogs, cfg.chunk_size), window):
            if len(results) != len(chunk):
                raise RuntimeError(f"annotator {annotator.name} returned {len(results)} results for {len(chunk)} dialogs")
            for d, r in zip(chunk, results, strict=True):
                reason = _check_result(d, r)
                if reason is None:
                    done = apply_result(d, r)
                    out.write(dumps(done) + "\n")
                    summary.add(done, r, None)
                    if cfg.sharegpt_output:
                        keep_for_sharegpt.append(done)
                else:
                    # a backend's error text may echo the API key: the rejects file never holds it
                    rej.write(json.dumps(redact_obj({"id": d.id, "reason": reason, "attempts": r.attempts,
                                                     "raw": r.raw,
                                                     "dialog": d.model_dump(mode="json", exclude_none=True)}),
                                         ensure_ascii=False) + "\n")
                    summary.add(d, r, reason)
            bar.update(len(chunk))
        meter.close()
    if cfg.sharegpt_output:
        write_sharegpt_annotated(cfg.sharegpt_output, keep_for_sharegpt)
    stats = Counter(getattr(annotator, "stats", Counter()))
    stats.subtract(usage_before)
    result = summary.as_dict()
    # answers fixed without asking again, and closed-set near misses mapped onto their label
    result["repaired_locally"] = stats.pop("repaired_locally", 0)
    result["mapped_labels"] = stats.pop("mapped_labels", 0)
    result["usage"] = {k: v for k, v in stats.items()}
    if "requests" in result["usage"]:
        result["usage"]["model_calls"] = result["usage"]["requests"] - result["usage"].get("cached", 0)
    result["text"] = summary.render()
    return result


def run(cfg: AnnotateConfig, *, annotator: Annotator | None = None, quiet: bool = False) -> Path:
    """Annotate ``cfg.input`` into ``cfg.output``; return the output path.

    Writes the rejects file (always, possibly empty) and the summary JSON (a manifest with the
    label distribution in ``summary``). Pass ``annotator`` to use a role object directly.
    """
    check_paths(inputs=[cfg.input, cfg.few_shot, cfg.prompt],
                files=[cfg.output, cfg.rejects_path(), cfg.summary_path(), cfg.sharegpt_output, cfg.sac_output])
    if cfg.threads is not None:
        from sage_dialog.core import threads

        threads.apply(cfg.threads)
    total = _count(cfg.input, cfg.input_format)
    from sage_dialog.backends.ledger import Ledger

    backend: Any = None  # what to close afterwards: the backend, or the Ray workers
    ledger = Ledger("annotate")
    if annotator is None and cfg.engine.kind == "ray":
        from sage_dialog.stages.annotate_remote import RemoteAnnotator

        annotator = backend = RemoteAnnotator(cfg, build_annotator)  # one annotator per Ray worker; chunks are the units
    elif annotator is None:
        annotator, backend = build_annotator(cfg, ledger)
    manifest = new_manifest("annotate", cfg.model_dump(mode="json"), inputs={str(cfg.input): sha256_path(cfg.input)})

    async def main() -> dict[str, Any]:
        try:
            return await _run_async(cfg, annotator, total, quiet)
        finally:
            if backend is not None:
                await backend.aclose()

    result = asyncio.run(main())
    if cfg.sac_output:
        from sage_dialog.stages.chain import chain_file

        chain_file(cfg.output, cfg.sac_output, src_format="dialogs")
    text = result.pop("text")
    manifest.usage = {**result.pop("usage"), "ledger": ledger.to_dict()["totals"]}
    manifest.summary = result
    manifest.outputs = [str(p) for p in (cfg.output, cfg.rejects_path(), cfg.sharegpt_output, cfg.sac_output) if p]
    manifest.finished = utc_now()
    write_json(cfg.summary_path(), manifest)
    if not quiet:
        print(text, file=sys.stderr)
        if "model_calls" in manifest.usage:
            speed = manifest.usage["ledger"].get("tokens_per_s")
            print(f"  model calls: {manifest.usage.get('model_calls', 0)}, cached: {manifest.usage.get('cached', 0)}"
                  + (f", {speed:g} tokens/s" if speed else ""), file=sys.stderr)
        print(f"wrote {cfg.output}, rejects {cfg.rejects_path()}, summary {cfg.summary_path()}", file=sys.stderr)
    return cfg.output


__all__ = [
    "AnnotateConfig",
    "LLMAnnotator",
    "LabelSets",
    "Summary",
    "answer_schema",
    "apply_result",
    "check_answer",
    "dialog_schema",
    "load_dialogs",
    "run",
]


def import_corpus(corpus: Literal["empathetic", "esconv", "chitchat"], path: str | Path | None, output: str | Path, *,
                  seeds_out: str | Path | None = None, limit: int | None = None,
                  min_turns: int = 1, max_turns: int | None = None,
                  label_map: str | Path | None = None, keep_unknown: bool = False) -> tuple[int, int]:
    """Write a public corpus as Dialog JSONL (and its first user utterances as seeds); return counts.

    Dialogs with fewer than ``min_turns`` turns are skipped (counted in the log line of the command);
    longer than ``max_turns``, they are cut to their first ``max_turns`` turns (a small annotator
    labels short dialogs much better);
    ``limit`` counts the dialogs written. ``path`` None means the installed chitchat-dataset's file.
    ESConv only: ``label_map`` (a JSON/YAML file ``{spelling: label}``) maps strategy spellings,
    ``keep_unknown`` keeps strategies that are in no set as written.
    """
    from sage_dialog.core.io import write_jsonl
    from sage_dialog.formats.empathetic import write_seeds

    if min_turns < 1:
        raise UserError(f"--min-turns must be at least 1, got {min_turns}")
    if max_turns is not None and max_turns < min_turns:
        raise UserError(f"--max-turns must be at least --min-turns ({min_turns}), got {max_turns}")
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be at least 1, got {limit}")
    if corpus != "esconv" and (label_map or keep_unknown):
        raise UserError("--label-map and --keep-unknown apply to esconv imports only")
    if path is None and corpus != "chitchat":
        raise UserError(f"import {corpus}: give the corpus FILE")

    def source() -> Iterator[Dialog]:
        if corpus == "chitchat":
            from sage_dialog.formats.chitchat import default_path, read_chitchat

            return read_chitchat(default_path() if path is None else path)
        p = Path(path)  # type: ignore[arg-type]
        if corpus == "esconv":
            from sage_dialog.formats.esconv import read_esconv, read_label_map

            return read_esconv(p, label_map=read_label_map(label_map) if label_map else None,
                               keep_unknown=keep_unknown)
        fmt: InputFormat = "seeds" if p.suffix.lower() in (".tsv", ".txt") else "empathetic"
        return load_dialogs(p, fmt)

    check_paths(inputs=[Path(path) if path is not None else None, label_map], files=[output, seeds_out])
    firsts: list[str] = []
    skipped = Counter[int]()

    def stream() -> Iterator[Dialog]:
        for d in source():
            if len(d.turns) < min_turns:
                skipped[len(d.turns)] += 1
                continue
            if max_turns is not None and len(d.turns) > max_turns:
                d = d.model_copy(update={"turns": d.turns[:max_turns]})
            firsts.append(d.turns[0].text)
            yield d
            if limit is not None and len(firsts) >= limit:
                return

    n = write_jsonl(output, stream())
    if skipped:
        print(f"skipped {sum(skipped.values())} dialogs with fewer than {min_turns} turns "
              f"({', '.join(f'{v} with {k}' for k, v in sorted(skipped.items()))})", file=sys.stderr)
    seeds = write_seeds(seeds_out, firsts) if seeds_out else 0
    return n, seeds

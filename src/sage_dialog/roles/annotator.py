"""The LLM annotator role: label every utterance of a dialog with motivation, emotion and topics.

The annotator sees a whole dialog in one request and answers JSON for all its turns
("future-aware": later turns inform the labels of earlier ones). :class:`LLMAnnotator` implements
:class:`roles.protocols.Annotator` on any backend:

1. it asks for JSON matching a schema built from a pydantic model (closed label sets become enums),
   and hands the schema to the backend for structured output / guided decoding where it has one;
2. it validates every answer (JSON, number of turns, fields present, values cleaned with
   :func:`sac.clean_value`, closed-set values mapped from near misses or refused), repairs what can
   be repaired locally (code fences, trailing commas, a bare list, ``topic`` for ``topics``) and
   otherwise asks again, showing the model its answer and the problems, a bounded number of times;
3. a dialog that still fails comes back with ``error`` set (the annotate stage writes it to the
   rejects file with the reason and counts it). Nothing is dropped silently.

:class:`ScoringAnnotator` chooses each closed label by the backend's option scores instead (for
small models). Both are made by :func:`sage_dialog.roles.factory.make_annotator` from a spec and a
:class:`~sage_dialog.roles.factory.BackendPool`, like every other role; :class:`LabelSets` are the
closed label sets both use.
"""

from __future__ import annotations

import difflib
import json
import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from sage_dialog.backends.base import Backend, BackendError, ChatRequest, SamplingParams
from sage_dialog.core import sac
from sage_dialog.core.errors import UserError, where
from sage_dialog.core.io import read_jsonl
from sage_dialog.core.schema import Dialog, Tags, Turn
from sage_dialog.labels import load_label_set
from sage_dialog.roles.protocols import AnnotationResult

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


# Bounds of the open fields in constrained decoding: a label is a word or a short phrase. A weak model
# (SmolLM2-135M) left unbounded fills a field with "embarraassss..." or "I am happy to say I am happy
# to say ..." until the token limit; bounded, the grammar closes the string and the answer completes.
OPEN_LABEL_CHARS = 32
TOPIC_CHARS = 24
MAX_TOPICS = 3


def dialog_schema(labels: LabelSets, dialog: Dialog, *, tidy: bool) -> dict[str, Any]:
    """The answer schema of one dialog: exactly its turns, in order, each with its role's label sets.

    A backend with constrained decoding (``hf`` with xgrammar, ``vllm``, a structured-output
    server) cannot then write a wrong turn count, a wrong index or a label outside a closed set:
    with closed sets the answer is valid by construction. Open fields are bounded: a motivation or
    emotion is a non-empty string of at most :data:`OPEN_LABEL_CHARS` characters, topics at most
    :data:`MAX_TOPICS` of :data:`TOPIC_CHARS`, so a weak model cannot spend the token budget on one
    label, and :func:`answer_token_bound` bounds the whole answer.
    """

    def value(role: str, fld: str) -> dict[str, Any]:
        allowed = labels.get(role, fld)
        if allowed:
            return {"enum": list(allowed)}
        return {"type": "string", "minLength": 1, "maxLength": TOPIC_CHARS if fld == "topics" else OPEN_LABEL_CHARS}

    items = []
    for i, turn in enumerate(dialog.turns):
        props: dict[str, Any] = {
            "index": {"const": i},
            "motivation": value(turn.role, "motivation"),
            "emotion": value(turn.role, "emotion"),
            "topics": {"type": "array", "items": value(turn.role, "topics"), "maxItems": MAX_TOPICS},
        }
        if tidy:
            props["text"] = {"type": "string"}
        items.append({"type": "object", "properties": props, "required": list(props), "additionalProperties": False})
    n = len(items)
    turns = {"type": "array", "prefixItems": items, "items": False, "minItems": n, "maxItems": n}
    return {"type": "object", "properties": {"turns": turns}, "required": ["turns"], "additionalProperties": False}


def answer_token_bound(schema: dict[str, Any]) -> int | None:
    """The most tokens an answer following ``schema`` (a :func:`dialog_schema`) can take in compact
    JSON, or None when a field is unbounded (``tidy`` text).

    Every token is at least one character, so the longest answer's characters bound its tokens;
    a quarter more covers escapes. With this as ``max_tokens`` a constrained answer is never cut off.
    """

    def chars(sch: dict[str, Any]) -> int | None:
        if "const" in sch:
            return len(json.dumps(sch["const"]))
        if "enum" in sch:
            return max(len(json.dumps(v, ensure_ascii=False)) for v in sch["enum"])
        if sch.get("type") == "string":
            return sch["maxLength"] + 2 if "maxLength" in sch else None
        if sch.get("type") == "array":
            item = chars(sch.get("items") or {})
            return None if item is None or "maxItems" not in sch else 2 + sch["maxItems"] * (item + 1)
        return None

    total = len('{"turns":[]}')
    for turn in schema["properties"]["turns"]["prefixItems"]:
        total += 2  # {} and the comma between turns
        for name, sch in turn["properties"].items():
            c = chars(sch)
            if c is None:
                return None
            total += len(name) + 4 + c  # "name": value,
    return int(total * 1.25) + 8


def enforces_schema(backend: Backend) -> bool:
    """Whether ``backend`` surely constrains decoding to a request's JSON schema (wrappers ask the inner
    one): ``hf:`` with xgrammar, ``vllm:`` in-process. Not ``openai:``: many compatible servers ignore
    ``response_format``, so there the budget stays per turn and a cut-off answer is retried larger."""
    inner = backend
    while hasattr(inner, "inner"):
        inner = inner.inner
    return bool(getattr(inner, "supports_json_schema", getattr(inner, "provider", "") == "vllm"))


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


# the start of every answer (see answer_model), prefilled with ``json_prefill``
JSON_PREFILL = '{"turns": [{"index": 0, "motivation": "'



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
        self._constrained = enforces_schema(backend)
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
        # structured output / guided decoding where the backend has it (closed label sets then give
        # valid labels by construction; a prefill turns it off); the answer is validated anyway
        schema = dialog_schema(self.labels, dialog, tidy=self.tidy)
        if self._constrained and self.prefill is None and (bound := answer_token_bound(schema)) is not None:
            budget = max(budget, bound)  # the longest answer the grammar allows: never cut off
        sampling = SamplingParams(temperature=self.temperature, max_tokens=budget)
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

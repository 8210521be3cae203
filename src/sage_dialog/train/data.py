"""Training data: reading SFT / preference files and building token-level loss masks.

Inputs (one JSON object per line):

* SFT: TRL messages (``{"messages": [{"role", "content"}, ...]}``) or our :class:`~sage_dialog.core.schema.Dialog`
  records. A SAC assistant turn's content is its rendered tag blocks followed by the reply.
* DPO: TRL conversational preference (``{"prompt": [msgs], "chosen": [msg], "rejected": [msg]}``) or
  our :class:`~sage_dialog.core.schema.PreferencePair` records.

SFT examples are tokenized here, not by TRL, so that the loss mask can tell the tag blocks of an
assistant turn from its reply: ``labels`` is ``input_ids`` where the token carries loss and ``-100``
elsewhere. Which tokens belong to an assistant turn comes from the chat template's
``{% generation %}`` markers (or, for a template without them, from rendering the conversation
prefix by prefix); which of those are tags comes from :func:`sac.parse`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from sage_dialog.core import sac
from sage_dialog.core.errors import UserError, where
from sage_dialog.core.io import format_validation_error, iter_jsonl_raw
from sage_dialog.core.schema import Dialog, PreferencePair, Turn
from sage_dialog.formats import trl
from sage_dialog.train.templates import has_generation_markers

Message = dict[str, str]
LossOn = Literal["turn", "reply", "tags"]
IGNORE = -100
_ROLES = ("system", "user", "assistant")


# ---------------------------------------------------------------------------------------------
# reading


def training_messages(turns: Sequence[Turn]) -> list[Message]:
    """Turns as TRL chat messages to train on: the chained SAC form of :mod:`sage_dialog.formats.trl`
    (assistant turns get their tag blocks in front of the reply, user turns plain); a tags-only
    assistant turn (empty reply) ends with its last block, so a loss on the tags ends there too."""
    msgs = trl.turns_to_messages(turns, "chained")
    for m, t in zip(msgs, turns, strict=True):
        if t.role == "assistant" and not t.text:
            m["content"] = m["content"].rstrip()
    return msgs


def _check_messages(obj: Any, path: Path, lineno: int, field: str) -> list[Message]:
    if not isinstance(obj, list) or not obj:
        raise UserError(f"{where(path, lineno, field)}: expected a non-empty list of messages")
    out: list[Message] = []
    for i, m in enumerate(obj):
        f = f"{field}[{i}]"
        if not isinstance(m, dict):
            raise UserError(f"{where(path, lineno, f)}: expected an object with role and content")
        role, content = m.get("role"), m.get("content")
        if role not in _ROLES:
            raise UserError(f"{where(path, lineno, f + '.role')}: expected one of {list(_ROLES)}, got {role!r}")
        if not isinstance(content, str):
            raise UserError(f"{where(path, lineno, f + '.content')}: expected a string")
        out.append({"role": role, "content": content})
    return out


def load_sft_messages(path: str | Path, limit: int | None = None) -> list[list[Message]]:
    """Read an SFT file (TRL messages or Dialog JSONL) as a list of conversations."""
    p = Path(path)
    convs: list[list[Message]] = []
    for lineno, obj in iter_jsonl_raw(p):
        if not isinstance(obj, dict):
            raise UserError(f"{where(p, lineno)}: expected a JSON object")
        if "messages" in obj:
            msgs = _check_messages(obj["messages"], p, lineno, "messages")
        elif "turns" in obj:
            try:
                msgs = training_messages(Dialog.model_validate(obj).turns)
            except ValidationError as e:
                raise UserError(format_validation_error(p, lineno, e)) from None
        else:
            raise UserError(f"{where(p, lineno)}: expected a 'messages' list (TRL) or a dialog record with 'turns'")
        if not any(m["role"] == "assistant" for m in msgs):
            raise UserError(f"{where(p, lineno, 'messages')}: no assistant turn, nothing to train on")
        convs.append(msgs)
        if limit is not None and len(convs) >= limit:
            break
    if not convs:
        raise UserError(f"{p}: empty file, expected JSONL records")
    return convs


def _one_reply(obj: Any, path: Path, lineno: int, field: str) -> list[Message]:
    if isinstance(obj, str):
        return [{"role": "assistant", "content": obj}]
    msgs = _check_messages(obj, path, lineno, field)
    if len(msgs) != 1 or msgs[0]["role"] != "assistant":
        raise UserError(f"{where(path, lineno, field)}: expected exactly one assistant message")
    return msgs


def pair_to_record(pair: PreferencePair) -> dict[str, list[Message]]:
    """Our PreferencePair as a TRL conversational preference record."""
    return {
        "prompt": training_messages(pair.history),
        "chosen": [{"role": "assistant", "content": training_messages([pair.chosen])[0]["content"]}],
        "rejected": [{"role": "assistant", "content": training_messages([pair.rejected])[0]["content"]}],
    }


def load_preferences(path: str | Path, limit: int | None = None) -> list[dict[str, list[Message]]]:
    """Read a preference file (TRL conversational or PreferencePair JSONL)."""
    p = Path(path)
    out: list[dict[str, list[Message]]] = []
    for lineno, obj in iter_jsonl_raw(p):
        if not isinstance(obj, dict):
            raise UserError(f"{where(p, lineno)}: expected a JSON object")
        if "prompt" in obj:
            for k in ("chosen", "rejected"):
                if k not in obj:
                    raise UserError(f"{where(p, lineno, k)}: missing")
            prompt = obj["prompt"]
            if isinstance(prompt, str):
                prompt = [{"role": "user", "content": prompt}]
            rec = {
                "prompt": _check_messages(prompt, p, lineno, "prompt"),
                "chosen": _one_reply(obj["chosen"], p, lineno, "chosen"),
                "rejected": _one_reply(obj["rejected"], p, lineno, "rejected"),
            }
            if rec["prompt"][-1]["role"] != "user":
                raise UserError(f"{where(p, lineno, 'prompt')}: must end with a user message")
        elif "history" in obj and "chosen" in obj:
            try:
                rec = pair_to_record(PreferencePair.model_validate(obj))
            except ValidationError as e:
                raise UserError(format_validation_error(p, lineno, e)) from None
        else:
            raise UserError(
                f"{where(p, lineno)}: expected prompt/chosen/rejected (TRL) or a preference pair with history"
            )
        out.append(rec)
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise UserError(f"{p}: empty file, expected JSONL records")
    return out


def split_eval(records: Sequence[Any], fraction: float, seed: int) -> tuple[list[Any], list[Any]]:
    """Hold out ``fraction`` of records (at least one, never all) for evaluation, reproducibly."""
    idx = list(range(len(records)))
    if fraction <= 0 or len(idx) < 2:
        return list(records), []
    random.Random(seed).shuffle(idx)
    n_eval = min(len(idx) - 1, max(1, round(len(idx) * fraction)))
    held = set(idx[:n_eval])
    return [r for i, r in enumerate(records) if i not in held], [records[i] for i in sorted(held)]


# ---------------------------------------------------------------------------------------------
# loss masks


@dataclass
class Encoded:
    """One tokenized conversation. ``parts[k]`` is ``"tags"``, ``"reply"`` or ``None`` (not assistant)."""

    input_ids: list[int]
    labels: list[int]
    parts: list[str | None]
    text: str


def drop_tags(messages: list[Message], p: float, rng: random.Random) -> list[Message]:
    """Tag dropout: each assistant turn that has tags loses them with probability ``p``."""
    if p <= 0:
        return messages
    out = []
    for m in messages:
        if m["role"] == "assistant" and rng.random() < p:
            parsed = sac.parse(m["content"])
            if parsed.has_tags:
                m = {"role": "assistant", "content": parsed.reply}
        out.append(m)
    return out


def _render(tokenizer: Any, messages: list[Message], template: str, **kw: Any) -> tuple[str, list[tuple[int, int]]]:
    from transformers.utils.chat_template_utils import render_jinja_template

    result: Any = render_jinja_template(  # typed as str upstream; returns (texts, generation spans)
        conversations=[messages],
        chat_template=template,
        **{**tokenizer.special_tokens_map, **kw},
    )
    rendered, indices = result
    spans: list[tuple[int, int]] = [(int(a), int(b)) for a, b in indices[0]] if indices else []
    return str(rendered[0]), spans


def assistant_spans(tokenizer: Any, messages: list[Message], template: str) -> tuple[str, list[tuple[int, int]]]:
    """Render ``messages``; return the text and one (start, end) character span per assistant turn.

    A span covers the turn's content and end-of-turn token, not trailing whitespace. With
    ``{% generation %}`` markers the spans are the marked regions; otherwise each assistant turn is
    found by rendering the conversation up to it (with a generation prompt) and up to its end.
    """
    n_assistant = sum(m["role"] == "assistant" for m in messages)
    if has_generation_markers(template):
        text, spans = _render(tokenizer, messages, template, return_assistant_tokens_mask=True)
        if len(spans) != n_assistant:
            raise UserError(
                f"chat template marks {len(spans)} generation regions for {n_assistant} assistant turns"
            )
    else:
        text, _ = _render(tokenizer, messages, template)
        spans = []
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            before, _ = _render(tokenizer, messages[:i], template, add_generation_prompt=True)
            upto, _ = _render(tokenizer, messages[: i + 1], template)
            if not (text.startswith(before) and text.startswith(upto) and len(upto) > len(before)):
                raise UserError(
                    "the chat template has no {% generation %} markers and does not render conversations "
                    "prefix by prefix; set model.chat_template to a named template (chatml, mistral)"
                )
            spans.append((len(before), len(upto)))
    out = []
    for s, e in spans:
        while e > s and text[e - 1].isspace():
            e -= 1
        out.append((s, e))
    return text, out


def _tag_span(text: str, span: tuple[int, int], content: str) -> tuple[int, int] | None:
    """Character span of the leading tag blocks of an assistant turn inside the rendered text."""
    parsed = sac.parse(content)
    if not parsed.has_tags:
        return None
    head = content[: len(content) - len(parsed.reply)].rstrip()  # blocks, without the separator space
    pos = text.find(head, span[0], span[1])
    if pos < 0:
        return None
    return pos, pos + len(head)


def encode_conversation(
    tokenizer: Any, messages: list[Message], template: str, *, loss_on: LossOn = "turn"
) -> Encoded:
    """Tokenize a conversation and label which tokens carry loss.

    ``loss_on="turn"``: every token of every assistant turn (tags, reply, end of turn);
    ``"reply"``: assistant tokens except the tag blocks; ``"tags"``: only the tag blocks.
    A token belongs to a region when its characters overlap it; a token straddling the end of the
    tag blocks counts as tags.
    """
    text, spans = assistant_spans(tokenizer, messages, template)
    contents = [m["content"] for m in messages if m["role"] == "assistant"]
    tag_spans = [_tag_span(text, sp, c) for sp, c in zip(spans, contents, strict=True)]
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = list(enc["input_ids"])
    offsets = enc["offset_mapping"]
    parts: list[str | None] = []
    for a, b in offsets:
        part: str | None = None
        for (s, e), tags in zip(spans, tag_spans, strict=True):
            if a < e and b > s:
                part = "tags" if tags is not None and a < tags[1] and b > tags[0] else "reply"
                break
        parts.append(part)
    want = {"turn": ("tags", "reply"), "reply": ("reply",), "tags": ("tags",)}[loss_on]
    labels = [t if p in want else IGNORE for t, p in zip(ids, parts, strict=True)]
    return Encoded(input_ids=ids, labels=labels, parts=parts, text=text)


def completion_loss_mask(tokenizer: Any, ids: Sequence[int], loss_on: LossOn) -> list[int]:
    """Which tokens of one assistant completion (tag blocks, reply, end of turn) carry loss, 1 or 0.

    The preference counterpart of :func:`encode_conversation`: ``"tags"`` keeps the leading tag blocks
    (a token straddling their end counts as tags), ``"reply"`` the rest, ``"turn"`` everything.
    """
    if loss_on == "turn" or not ids:
        return [1] * len(ids)
    ends, text = [], ""
    for j in range(len(ids)):  # character end of each token in the decoded completion
        text = tokenizer.decode(list(ids[: j + 1]), skip_special_tokens=False)
        ends.append(len(text))
    parsed = sac.parse(text)
    head = len(text[: len(text) - len(parsed.reply)].rstrip()) if parsed.has_tags else 0
    starts = [0, *ends[:-1]]
    is_tag = [st < head for st in starts]
    return [int(t) if loss_on == "tags" else int(not t) for t in is_tag]


def build_sft_dataset(
    tokenizer: Any,
    conversations: Sequence[list[Message]],
    template: str,
    *,
    loss_on: LossOn = "turn",
    tag_dropout: float = 0.0,
    seed: int = 0,
) -> Any:  # datasets.Dataset
    """A pre-tokenized ``datasets.Dataset`` (``input_ids``, ``labels``) that SFTTrainer uses as is.

    Tag dropout is decided once per turn here (seeded), so a run is reproducible.
    """
    from datasets import Dataset

    if not getattr(tokenizer, "is_fast", False):
        raise UserError("the tokenizer must be a fast tokenizer (offsets are needed for the loss mask)")
    rng = random.Random(seed)
    rows = []
    for msgs in conversations:
        enc = encode_conversation(tokenizer, drop_tags(msgs, tag_dropout, rng), template, loss_on=loss_on)
        if any(label != IGNORE for label in enc.labels):
            rows.append({"input_ids": enc.input_ids, "labels": enc.labels})
    if not rows:
        raise UserError("no training tokens: every example has an empty loss mask (check data.loss_on)")
    return Dataset.from_list(rows)

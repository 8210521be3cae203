"""The State-Action Chain text codec (FORMATS.md section 1).

A SAC assistant turn is ``{u_motivation: .., u_emotion: .., u_topic: [..]} {a_motivation: ..,
a_emotion: .., a_topic: [..]} reply``. This module turns such text into typed :class:`Tags` and back:

* :func:`parse` is tolerant (spaces, missing keys, ``null``, unknown keys, quotes, both key
  spellings) and never eats reply text: only leading ``{...}`` groups whose every item is a
  ``key: value`` pair are taken as tag blocks; everything from the first other character on is reply.
* :func:`render_block` / :func:`render_turn` write canonical short keys in canonical order.
* :func:`steering_prefill` gives the text an assistant turn is prefilled with to force an action.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from sage_dialog.core.schema import Tags, TagValue

BlockKind = Literal["state", "action", "plain"]

# canonical field name -> accepted spellings, per kind of block
_KEYS: dict[BlockKind, dict[str, tuple[str, ...]]] = {
    "state": {
        "motivation": ("u_motivation", "user_motivation"),
        "emotion": ("u_emotion", "user_emotion"),
        "topic": ("u_topic", "user_topic", "u_topics", "user_topics"),
    },
    "action": {
        "motivation": ("a_motivation", "assistant_motivation"),
        "emotion": ("a_emotion", "assistant_emotion"),
        "topic": ("a_topic", "assistant_topic", "a_topics", "assistant_topics"),
    },
    "plain": {
        "motivation": ("motivation",),
        "emotion": ("emotion",),
        "topic": ("topic", "topics"),
    },
}
_PREFIX: dict[BlockKind, str] = {"state": "u_", "action": "a_", "plain": ""}
_LOOKUP: dict[str, tuple[BlockKind, str]] = {
    spelling: (kind, canon) for kind, m in _KEYS.items() for canon, spellings in m.items() for spelling in spellings
}
_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\- ]*$")
# characters that would break the block syntax if they appeared inside a value
_FORBIDDEN = set("{}[],:\n\r")


class SacError(ValueError):
    """A value cannot be rendered into SAC syntax."""


@dataclass
class ParsedTurn:
    """The result of :func:`parse`: tag blocks found before the reply, and the reply itself."""

    reply: str
    state: Tags | None = None
    action: Tags | None = None
    plain: Tags | None = None
    blocks: list[tuple[BlockKind, Tags]] = field(default_factory=list)
    spans: list[tuple[int, int]] = field(default_factory=list)  # [start, end) of each block in the text

    @property
    def has_tags(self) -> bool:
        return bool(self.blocks)


# ---------------------------------------------------------------------------------------------
# parsing


def _split_top(s: str, sep: str = ",") -> list[str]:
    """Split on ``sep`` outside square brackets."""
    parts: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in s:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth = max(0, depth - 1)
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def _unquote(s: str) -> str:
    s = s.strip()
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "'\"":
        return s[1:-1].strip()
    return s


def _parse_value(raw: str) -> TagValue:
    v = raw.strip()
    if v.startswith("[") and v.endswith("]"):
        inner = v[1:-1]
        # clean_value: a value read back must be writable again (model output can be malformed)
        items = [clean_value(_unquote(x)) for x in inner.split(",")]
        return [x for x in items if x and x.lower() not in ("null", "none")]
    v = clean_value(_unquote(v))
    if v.lower() in ("null", "none", ""):
        return None
    return v


def _parse_block_body(body: str) -> dict[str, TagValue] | None:
    """``key: value, ...`` -> dict, or None if the body is not a tag block."""
    if not body.strip():
        return {}
    if body.count("[") != body.count("]"):
        return None
    out: dict[str, TagValue] = {}
    for item in _split_top(body):
        if not item.strip():
            continue  # tolerate a trailing comma
        key, sep, value = item.partition(":")
        key = _unquote(key)
        if not sep or not _KEY_RE.match(key):
            return None
        out[key] = _parse_value(value)
    return out


def _classify(d: dict[str, TagValue]) -> tuple[BlockKind, Tags]:
    votes = {"state": 0, "action": 0, "plain": 0}
    for k in d:
        hit = _LOOKUP.get(k)
        if hit:
            votes[hit[0]] += 1
    kind: BlockKind = max(("state", "action", "plain"), key=lambda k: votes[k])  # ties -> state first
    if votes[kind] == 0:
        kind = "plain"
    fields: dict[str, TagValue] = {}
    extra: dict[str, TagValue] = {}
    for k, val in d.items():
        hit = _LOOKUP.get(k)
        if hit and hit[0] == kind and hit[1] not in fields:
            fields[hit[1]] = val
        else:
            extra[k] = val
    topic = fields.get("topic")
    if isinstance(topic, str):
        topic = [topic]
    motivation, emotion = fields.get("motivation"), fields.get("emotion")
    return kind, Tags(
        motivation=", ".join(motivation) if isinstance(motivation, list) else motivation,
        emotion=", ".join(emotion) if isinstance(emotion, list) else emotion,
        topics=topic,
        extra=extra,
    )


def parse(text: str) -> ParsedTurn:
    """Split leading tag blocks from the reply. Text with no tag block comes back unchanged."""
    pos, n = 0, len(text)
    blocks: list[tuple[BlockKind, Tags]] = []
    spans: list[tuple[int, int]] = []
    reply_start = 0
    while True:
        i = pos
        while i < n and text[i].isspace():
            i += 1
        if i >= n or text[i] != "{":
            break
        close = text.find("}", i + 1)
        if close < 0 or "{" in text[i + 1 : close]:
            break
        body = _parse_block_body(text[i + 1 : close])
        if body is None:
            break
        blocks.append(_classify(body))
        spans.append((i, close + 1))
        pos = close + 1
        reply_start = pos
    if not blocks:
        return ParsedTurn(reply=text)
    reply = text[reply_start:]
    # drop only the separator whitespace between the last block and the reply
    reply = reply.lstrip(" \t\n\r")
    parsed = ParsedTurn(reply=reply, blocks=blocks, spans=spans)
    for kind, tags in blocks:
        if getattr(parsed, kind) is None:
            setattr(parsed, kind, tags)
    return parsed


# a tag key as models write it where a reply should start (with or without the opening brace)
_STRAY_KEY_RE = re.compile(r"""^\{?\s*['"]?(?:[ua]_|user_|assistant_)?(?:motivation|emotion|topics?)['"]?\s*:""", re.I)
_STRAY_ITEM_RE = re.compile(r"""^\s*['"]?[A-Za-z_][A-Za-z0-9_]*['"]?\s*:\s*(?:\[[^\]]*\]|[^,{}\[\]\n]*?)\s*,""")


def split_stray(reply: str, *, inner: bool = True) -> tuple[str, str]:
    """Split tag-like text off the start of a reply: ``(stray, reply)``.

    A model that half-learnt the SAC format writes broken blocks where its reply should start:
    ``{a_emotion: happy, joke} Sure``, ``a_motivation: joke} Sure``, ``{a_motivation: joke, Sure``.
    :func:`parse` keeps such text as reply (it never guesses); front ends call this so that what
    they show as the reply never starts with tag text. Leading ``{...}`` groups with a ``:`` in
    them (or empty), brace-less
    ``key: value ... }`` runs of SAC keys and the ``key: value,`` items after an unclosed ``{`` are
    stray; so is every region around a ``u_``/``a_`` key later in the reply (:func:`split_inner`; ``inner=False``: the start only).
    The rest is the reply.
    """
    stray: list[str] = []
    rest = reply
    while True:
        head = rest.lstrip()
        close = head.find("}")
        if head.startswith("{") and close >= 0 and (":" in head[:close] or not head[1:close].strip()):
            stray.append(head[: close + 1])
            rest = head[close + 1 :]
            continue
        if _STRAY_KEY_RE.match(head) and close >= 0 and "\n" not in head[:close]:
            stray.append(head[: close + 1])
            rest = head[close + 1 :]
            continue
        if head.startswith("{") or _STRAY_KEY_RE.match(head):
            # an unclosed block: its "key: value," items are tags, what follows the last one is reply
            start = i = 1 if head.startswith("{") else 0
            while m := _STRAY_ITEM_RE.match(head[i:]):
                i += m.end()
            tail = head[i:].strip()
            if _STRAY_KEY_RE.match(tail) and "," not in tail:
                i = len(head)  # the last item ran to the end: nothing of it is reply
            if i > start:
                stray.append(head[:i].rstrip())
                rest = head[i:]
                continue
        break
    rest = rest.lstrip(" \t\n\r")
    if inner:
        found, rest = split_inner(rest)
        stray += found
    if not stray:
        return "", reply
    return " ".join(stray), rest


# a SAC key inside a reply (only the u_/a_ spellings: plain "emotion:" is ordinary text there)
_SENTENCE_END_RE = re.compile(r"[.!?]\s+")
# how far before a brace-less key a region may start: a streamed reply holds back this much
INNER_LOOKBACK = 64
_SAC_KEY_RE = re.compile(r"""['"]?\b[ua]_(?:motivation|emotion|topics?)['"]?\s*:""", re.I)


def split_inner(text: str) -> tuple[list[str], str]:
    """Tag text after the reply's start: every region around a ``u_``/``a_`` key, cut out.

    A region runs from its key back to an opening ``{`` (after the last ``}``) or, with no brace (a
    block whose head was lost), back over the one ``value,`` item before the key (the lost key's
    value; not past a sentence end, a ``}`` or :data:`INNER_LOOKBACK` characters), and forward to the
    next ``}`` (or to the end). A model at a high temperature writes e.g.
    ``ofhaha. {a_motivation: calm} You can do it`` or ``gradeencouraging, a_topic: [work]} You could try``.
    """
    stray: list[str] = []
    while m := _SAC_KEY_RE.search(text):
        closed = text.rfind("}", 0, m.start())
        opened = text.rfind("{", closed + 1, m.start())
        if opened >= 0:
            start = opened
        else:
            ends = [b.end() for b in _SENTENCE_END_RE.finditer(text, 0, m.start())]
            comma = text.rfind(",", 0, m.start())
            item = text.rfind(",", 0, comma) + 1 if comma >= 0 and not text[comma + 1:m.start()].strip() else m.start()
            bound = m.start() - INNER_LOOKBACK
            if bound > 0:
                space = text.find(" ", bound)
                bound = space + 1 if 0 <= space < m.start() else m.start()
            start = max([closed + 1, item, bound, *ends])
        end = text.find("}", m.end())
        end = len(text) if end < 0 else end + 1
        stray.append(text[start:end].strip())
        text = (text[:start].rstrip() + " " + text[end:].lstrip()).strip()
    return stray, text


def strip(text: str) -> str:
    """The reply without its leading tag blocks."""
    return parse(text).reply


def strip_all(text: str) -> str:
    """Remove every tag block anywhere in the text (the original's transcript conversion)."""
    out = re.sub(r"\{[^{}]*\}", lambda m: m.group(0) if _parse_block_body(m.group(0)[1:-1]) is None else "", text)
    return re.sub(r"[ \t]{2,}", " ", out).strip()


# ---------------------------------------------------------------------------------------------
# rendering


def clean_value(value: str) -> str:
    """Make a free-text label safe for SAC syntax (drops delimiters, squeezes spaces)."""
    s = "".join(" " if ch in _FORBIDDEN else ch for ch in value)
    return " ".join(s.split())


def _check(value: str, what: str) -> str:
    bad = _FORBIDDEN.intersection(value)
    if bad or value != value.strip() or not value or value.lower() in ("null", "none"):
        raise SacError(f"{what}={value!r} cannot be written as a SAC tag value (use sac.clean_value)")
    return value


def _render_value(v: TagValue, what: str) -> str:
    if v is None:
        return "null"
    if isinstance(v, list):
        return "[" + ", ".join(_check(x, what) for x in v) + "]"
    return _check(v, what)


def render_block(tags: Tags | None, kind: BlockKind) -> str:
    """``{u_motivation: x, u_emotion: y, u_topic: [a, b]}`` (all three canonical keys, then extras)."""
    tags = tags or Tags()
    p = _PREFIX[kind]
    parts = [
        f"{p}motivation: {_render_value(tags.motivation, 'motivation')}",
        f"{p}emotion: {_render_value(tags.emotion, 'emotion')}",
        f"{p}topic: {_render_value(tags.topics, 'topic')}",
    ]
    for k, val in tags.extra.items():
        if k in _LOOKUP:
            continue  # a duplicate or other-block key read from malformed model output: the canonical fields win
        if not _KEY_RE.match(k):
            raise SacError(f"extra key {k!r} cannot be written as a SAC tag key")
        parts.append(f"{k}: {_render_value(val, k)}")
    return "{" + ", ".join(parts) + "}"


def render_turn(reply: str, *, state: Tags | None = None, action: Tags | None = None) -> str:
    """A SAC assistant turn: state block, action block (each only if given), then the reply."""
    blocks = []
    if state is not None:
        blocks.append(render_block(state, "state"))
    if action is not None:
        blocks.append(render_block(action, "action"))
    return " ".join([*blocks, reply]) if blocks else reply


def render_annotated(reply: str, tags: Tags | None) -> str:
    """A per-utterance annotated turn: ``{motivation: .., emotion: .., topic: [..]} text``."""
    return reply if tags is None else f"{render_block(tags, 'plain')} {reply}"


def steering_prefill(action: Tags, state: Tags | None = None) -> str:
    """Text to prefill an assistant turn with so the model continues under a forced action.

    Given fields are written in canonical order. When all three action fields are given the block is
    closed and the model writes only the reply; otherwise the block is left open after a comma so
    the model fills in the rest. If ``state`` is None the caller must first let the model write its
    state block (stop at ``}``) and then append this prefill (see :func:`action_prefill`).
    """
    head = render_block(state, "state") + " " if state is not None else ""
    return head + action_prefill(action)


def action_prefill(action: Tags) -> str:
    """The action part of :func:`steering_prefill`."""
    parts = []
    given = action.fields()
    for canon in ("motivation", "emotion", "topic"):
        val = given[canon]
        if val is not None:
            parts.append(f"a_{canon}: {_render_value(val, canon)}")
    for k, val in action.extra.items():
        parts.append(f"{k}: {_render_value(val, k)}")
    complete = all(given[c] is not None for c in ("motivation", "emotion", "topic"))
    if complete:
        return "{" + ", ".join(parts) + "} "
    return "{" + "".join(p + ", " for p in parts)


def tag_diff(a: Tags | None, b: Tags | None) -> list[str]:
    """Names of canonical fields whose values differ between two tag sets."""
    fa, fb = (a or Tags()).fields(), (b or Tags()).fields()
    return [k for k in ("motivation", "emotion", "topic") if fa[k] != fb[k]]

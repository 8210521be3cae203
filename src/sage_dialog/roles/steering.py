"""Steering by prefill: the forced fields of a turn, and the tag-block steps every steered generation shares.

A model trained on State-Action Chains writes ``{state} {action} reply``; what is prefilled into
the assistant turn is what it cannot choose (:func:`sac.steering_prefill`). :class:`Steering` holds
the forced fields (parsed from ``/steer``, the web panel or the server's ``sage_steer`` by
:func:`parse_steering`). The block steps write one tag block per call (:func:`block_sampling`: a few
tokens, stop at ``}``), close what the model wrote (:func:`close_block`, :func:`own_block`) and read
it back with the forced fields winning (:func:`read_block`, :func:`forced_fields`).

:func:`build_prefills` is the prefill pipeline of chat, the web UI, the server and steerability
(:mod:`.assistant` generates the reply after it); the latent search
(:mod:`sage_dialog.stages.search.actions`) writes the state block and forces sampled or listed
actions with the same steps.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from sage_dialog.backends.base import Backend, ChatRequest, Message, SamplingParams
from sage_dialog.core import sac
from sage_dialog.core.errors import UserError
from sage_dialog.core.schema import Tags

# steering keys accepted in `/steer`, the web panel and the server's `sage_steer` field
STEER_KEYS: dict[str, tuple[Literal["state", "action"], str]] = {
    "u_motivation": ("state", "motivation"),
    "u_emotion": ("state", "emotion"),
    "u_topic": ("state", "topics"),
    "a_motivation": ("action", "motivation"),
    "a_emotion": ("action", "emotion"),
    "a_topic": ("action", "topics"),
}
# a tag block is short: this bounds the calls that only write one block
BLOCK_MAX_TOKENS = 64


@dataclass
class Steering:
    """Fields forced on the next assistant turn. ``None`` means the model chooses."""

    state: Tags | None = None
    action: Tags | None = None

    @property
    def is_empty(self) -> bool:
        return (self.state is None or self.state.is_empty()) and (self.action is None or self.action.is_empty())

    def as_dict(self) -> dict[str, str]:
        """The forced fields as ``{"a_emotion": "playful", "a_topic": "work, exam"}``."""
        out: dict[str, str] = {}
        for key, (kind, attr) in STEER_KEYS.items():
            tags = self.state if kind == "state" else self.action
            val = getattr(tags, attr) if tags is not None else None
            if val is not None:
                out[key] = ", ".join(val) if isinstance(val, list) else val
        return out


def parse_steering(items: Mapping[str, Any] | Iterable[str] | None, *, what: str = "steering") -> Steering:
    """Build a :class:`Steering` from ``{"a_emotion": "playful"}`` or ``["a_emotion=playful", ...]``.

    ``a_topic`` / ``u_topic`` take a comma-separated list (or a JSON list in a mapping). Empty
    values are ignored (the model chooses). Unknown keys raise :class:`UserError`.
    """
    if items is None:
        return Steering()
    pairs: list[tuple[str, Any]] = []
    if isinstance(items, Mapping):
        pairs = list(items.items())
    else:
        for item in items:
            key, sep, value = item.partition("=")
            if not sep:
                raise UserError(f"{what}: {item!r} is not KEY=VALUE (keys: {', '.join(STEER_KEYS)})")
            pairs.append((key, value))
    fields: dict[str, dict[str, Any]] = {"state": {}, "action": {}}
    for key, value in pairs:
        key = key.strip()
        if key not in STEER_KEYS:
            raise UserError(f"{what}: unknown key {key!r} (keys: {', '.join(STEER_KEYS)})")
        kind, attr = STEER_KEYS[key]
        if value is None:
            continue
        if attr == "topics":
            raw = value if isinstance(value, list) else str(value).split(",")
            topics = [sac.clean_value(str(t)) for t in raw]
            topics = [t for t in topics if t]
            if topics:
                fields[kind][attr] = topics
        else:
            v = sac.clean_value(str(value))
            if v and v.lower() not in ("null", "none"):
                fields[kind][attr] = v
    return Steering(
        state=Tags(**fields["state"]) if fields["state"] else None,
        action=Tags(**fields["action"]) if fields["action"] else None,
    )


# ---------------------------------------------------------------------------------------------
# one tag block at a time (chat's prefill pipeline below, the latent search's proposals)


def block_sampling(sampling: SamplingParams, **changes: Any) -> SamplingParams:
    """``sampling`` for a call that writes one tag block: at most :data:`BLOCK_MAX_TOKENS`, stop at ``}``."""
    return replace(sampling, max_tokens=BLOCK_MAX_TOKENS, stop=("}",), **changes)


def close_block(opened: str, completion: str) -> str:
    """``opened`` + the model's completion up to its first ``}``, closed."""
    body = completion.split("}", 1)[0]
    return opened + body.replace("{", " ") + "}"


def own_block(completion: str) -> str:
    """The first tag block of a completion in which the model opened the block itself, closed."""
    # leading braces hold no "}": dropping them before or after the cut at the first "}" is the same
    return close_block("{", completion.strip().lstrip("{"))


def state_head(completion: str) -> str:
    """The state head (``{u_...} ``) from a block the model opened itself; empty when it is no state block."""
    parsed = sac.parse(own_block(completion))
    if not parsed.blocks or parsed.blocks[0][0] != "state":
        return ""
    try:
        return sac.render_block(parsed.blocks[0][1], "state") + " "
    except sac.SacError:
        return ""


def forced_fields(forced: Tags) -> dict[str, Any]:
    """The fields ``forced`` sets (``extra`` left out), to lay over what the model wrote."""
    return {k: v for k, v in forced.model_dump(exclude_defaults=True).items() if k != "extra"}


def read_block(text: str, kind: Literal["state", "action"], forced: Tags | None) -> Tags:
    """Read one model-written block; the forced fields override; unreadable -> just the forced ones."""
    parsed = sac.parse(text)
    tags = parsed.blocks[0][1] if parsed.blocks else Tags()
    if forced is not None:
        tags = tags.model_copy(update=forced_fields(forced))
    # values must render: drop what a garbage block cannot carry
    try:
        sac.render_block(tags, kind)
    except sac.SacError:
        tags = Tags(**forced_fields(forced or Tags()))
    return tags


def seeded(sampling: SamplingParams, i: int) -> SamplingParams:
    """Different candidates get different seeds (a shared seed would make them identical)."""
    return sampling if sampling.seed is None else replace(sampling, seed=sampling.seed + i)


# ---------------------------------------------------------------------------------------------
# the prefill pipeline of chat, the web UI, the server and steerability


async def _complete_blocks(
    backend: Backend,
    messages: Sequence[Message],
    heads: list[str],
    opened: list[str],
    kind: Literal["state", "action"],
    forced: Tags | None,
    sampling: SamplingParams,
    spent: list[int] | None = None,
) -> list[str]:
    """For each candidate, let the model finish the open block ``heads[i] + opened[i]``.

    ``spent[i]`` (when given) grows by the tokens candidate ``i``'s block cost."""
    one_block = block_sampling(sampling)
    reqs = [
        ChatRequest(messages=list(messages), n=1, sampling=seeded(one_block, i), prefill=h + o)
        for i, (h, o) in enumerate(zip(heads, opened, strict=True))
    ]
    results = await backend.generate(reqs)
    out = []
    for i, (h, o, res) in enumerate(zip(heads, opened, results, strict=True)):
        if spent is not None and res.completions:
            spent[i] += res.completions[0].tokens_out
        block = close_block(o, res.completions[0].text if res.completions else "")
        out.append(h + sac.render_block(read_block(block, kind, forced), kind) + " ")
    return out


async def build_prefills(
    backend: Backend,
    messages: Sequence[Message],
    steering: Steering | None,
    n: int,
    sampling: SamplingParams,
    *,
    latent_first: bool = False,
    spent: list[int] | None = None,
) -> list[str]:
    """The text each of ``n`` candidates is prefilled with before the model writes the reply.

    With ``latent_first`` both blocks are always complete in the prefill (the model writes the
    missing ones in block-sized calls), so the reply's own call gets the whole ``max_tokens`` and
    can never be cut inside a tag block. ``spent[i]`` counts the tokens those calls cost.
    """
    steering = steering or Steering()
    if steering.is_empty and not latent_first:
        return [""] * n
    state, action = steering.state, steering.action
    if state is not None and not state.is_empty():
        heads = [sac.render_block(state, "state") + " "] * n
    else:
        heads = await _complete_blocks(backend, messages, [""] * n, ["{"] * n, "state", None, sampling, spent)
    if action is None or action.is_empty():
        if not latent_first:
            return heads
        return await _complete_blocks(backend, messages, heads, ["{"] * n, "action", None, sampling, spent)
    opened = sac.action_prefill(action)
    if opened.endswith("} "):  # every action field given: nothing for the model to fill in
        return [h + opened for h in heads]
    return await _complete_blocks(backend, messages, heads, [opened] * n, "action", action, sampling, spent)



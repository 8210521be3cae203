"""Steerable generation of SAC assistant turns: the core shared by chat, web UI, server and measures.

A model trained on State-Action Chains writes ``{state} {action} reply``. Steering works by
*prefilling* the assistant turn (:func:`sac.steering_prefill`; the forced fields and the prefill
pipeline are :mod:`.steering`'s):

* nothing forced: the model writes everything (one call);
* a forced state: its block is prefilled whole (missing fields are written ``null``);
* a forced action without a forced state: the model first writes its own state block (stop at
  ``}``), then the action prefill is appended;
* a partly forced action (say only ``a_emotion``): the open block is prefilled and the model fills
  the rest (stop at ``}``); the forced values always win when the block is read back;
* then the model writes the reply after the closed blocks.

Every step is one batched ``backend.generate`` call over all candidates. :func:`generate_turns`
returns parsed :class:`Candidate` objects; :func:`stream_turn` yields the latent as soon as it is
known and then the reply text piece by piece through :meth:`Backend.stream`: token by token for
backends that stream (``hf``, ``openai``), otherwise the whole reply is generated and then emitted.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sage_dialog.backends.base import Backend, ChatRequest, Completion, Message, SamplingParams
from sage_dialog.core import sac
from sage_dialog.core.errors import UserError
from sage_dialog.core.schema import Tags, Turn
from sage_dialog.roles.steering import Steering, build_prefills, seeded


@dataclass
class Candidate:
    """One generated assistant turn: the full SAC text and what was read out of it."""

    text: str  # the whole assistant turn, prefill included (what goes back into the history)
    reply: str  # the reply with its tag blocks (and any stray tag text) removed
    state: Tags | None
    action: Tags | None
    finish_reason: str = "stop"
    tokens_out: int = 0
    tokens_in: int = 0
    forced: dict[str, str] = field(default_factory=dict)
    logprobs: list[dict[str, Any]] | None = None  # of the reply's tokens, when asked for
    # tag-like text the model wrote where its reply starts that is not a readable block (a model
    # that half-learnt the format): kept apart so that it is never shown as the reply
    stray: str = ""

    def turn(self) -> Turn:
        """The candidate as a SAC assistant :class:`Turn`."""
        return Turn(role="assistant", text=self.reply, state=self.state, action=self.action)

    def latent(self) -> dict[str, Any]:
        """``{"state": {...} | None, "action": {...} | None}`` as plain JSON (``stray`` when there is any)."""
        out: dict[str, Any] = {
            "state": self.state.model_dump(exclude_defaults=True) if self.state is not None else None,
            "action": self.action.model_dump(exclude_defaults=True) if self.action is not None else None,
        }
        if self.stray:
            out["stray"] = self.stray
        return out


def format_tags(tags: Tags | None) -> str:
    """Human-readable tags: ``motivation joke · emotion playful · topics work, exam``."""
    if tags is None or tags.is_empty():
        return "(none)"
    parts = []
    if tags.motivation is not None:
        parts.append(f"motivation {tags.motivation}")
    if tags.emotion is not None:
        parts.append(f"emotion {tags.emotion}")
    if tags.topics is not None:
        parts.append("topics " + (", ".join(tags.topics) if tags.topics else "-"))
    for k, v in tags.extra.items():
        parts.append(f"{k} {', '.join(v) if isinstance(v, list) else v}")
    return " · ".join(parts)


def split_turn(text: str) -> tuple[sac.ParsedTurn, str, str]:
    """``(parsed, stray, reply)`` of a whole assistant turn: readable blocks, stray tag text, reply."""
    parsed = sac.parse(text)
    stray, reply = sac.split_stray(parsed.reply)
    return parsed, stray, reply.strip()


def _candidate(prefill: str, text: str, finish_reason: str, tokens_out: int, steering: Steering | None) -> Candidate:
    full = prefill + text
    parsed, stray, reply = split_turn(full)
    return Candidate(
        text=full,
        reply=reply,
        stray=stray,
        state=parsed.state,
        action=parsed.action,
        finish_reason=finish_reason,
        tokens_out=tokens_out,
        forced=(steering or Steering()).as_dict(),
    )


async def generate_turns(
    backend: Backend,
    messages: Sequence[Message],
    *,
    steering: Steering | None = None,
    n: int = 1,
    sampling: SamplingParams | None = None,
    latent_first: bool = False,
    json_schema: dict[str, Any] | None = None,
    logprobs: int | None = None,
) -> list[Candidate]:
    """Generate ``n`` candidate assistant turns after ``messages`` (SAC history), steered by prefill.

    ``latent_first``: see :func:`build_prefills` (``max_tokens`` then bounds the reply alone).
    ``json_schema`` goes to the backend's structured mode, for one unsteered call whose whole
    answer is the reply (no latent is asked for). ``logprobs`` (see :class:`ChatRequest`) asks for
    the token logprobs of the reply's call.
    """
    sampling = sampling or SamplingParams()
    spent = [0] * n
    if json_schema is not None:
        if steering is not None and not steering.is_empty:
            raise UserError("a JSON schema reply cannot be steered: it has no tag blocks")
        prefills = [""] * n
    else:
        prefills = await build_prefills(backend, messages, steering, n, sampling, latent_first=latent_first, spent=spent)
    if len(set(prefills)) == 1:
        results = await backend.generate(
            [
                ChatRequest(
                    messages=list(messages), n=n, sampling=sampling, prefill=prefills[0] or None, json_schema=json_schema,
                    logprobs=logprobs,
                )
            ]
        )
        comps = results[0].completions
        tokens_in = results[0].tokens_in
    else:
        reqs = [
            ChatRequest(messages=list(messages), n=1, sampling=seeded(sampling, i), prefill=p or None,
                        logprobs=logprobs)
            for i, p in enumerate(prefills)
        ]
        results = await backend.generate(reqs)
        comps = [r.completions[0] for r in results]
        tokens_in = results[0].tokens_in
    cands = [
        _candidate(p, c.text, c.finish_reason, c.tokens_out, steering) for p, c in zip(prefills, comps, strict=True)
    ]
    if json_schema is not None:  # the whole answer is the reply: JSON is no tag text, whatever its braces
        for cand, comp in zip(cands, comps, strict=True):
            cand.reply, cand.stray, cand.state, cand.action = comp.text.strip(), "", None, None
    for c, extra, comp in zip(cands, spent, comps, strict=True):
        c.tokens_in = tokens_in
        c.logprobs = comp.logprobs
        c.tokens_out += extra
    return cands


def generate_turns_sync(backend: Backend, messages: Sequence[Message], **kw: Any) -> list[Candidate]:
    """:func:`generate_turns` for synchronous callers (no event loop running)."""
    return asyncio.run(generate_turns(backend, messages, **kw))


# ---------------------------------------------------------------------------------------------
# streaming


@dataclass
class StreamEvent:
    """One streaming event: ``latent`` (state/action known), ``text`` (a reply piece), ``done``."""

    kind: Literal["latent", "text", "done"]
    text: str = ""
    state: Tags | None = None
    action: Tags | None = None
    candidate: Candidate | None = None


# a reply that is one word so far may still turn out to be a tag key (``a_motiv`` -> ``a_motivation:``)
_ONE_WORD = re.compile(r"""^['"]?[A-Za-z_]{0,24}$""")


class _TagHold:
    """Holds back streamed text while it may still be a leading tag block; releases the reply.

    Stray tag text (:func:`sac.split_stray`) is held back too; once the first reply text is out,
    where the reply starts is fixed (``start``), so what was shown stays a prefix of the reply.
    """

    def __init__(self) -> None:
        self.buf = ""
        self.released = 0  # chars of the reply already emitted
        self.latent_sent = False
        self.state: Tags | None = None
        self.action: Tags | None = None
        self.start: int | None = None  # offset of the reply in buf, fixed at the first release
        self.stray = ""

    def feed(self, piece: str, final: bool = False) -> list[StreamEvent]:
        self.buf += piece
        if not self.buf.strip() and not final:
            return []  # nothing yet: the model may still open a tag block
        parsed = sac.parse(self.buf)
        head = self.buf.lstrip()
        if not parsed.has_tags:
            # an opening brace that has not closed yet may still become a tag block
            if head.startswith("{") and "}" not in head and not final:
                return []
            reply = self.buf.lstrip()
        else:
            reply = parsed.reply
            pending_block = reply.startswith("{") and "}" not in reply
            if not final and (not reply.strip() or pending_block):
                return []
        if self.start is None:
            stray, rest = sac.split_stray(reply)
            if not final and (not rest.strip() or _ONE_WORD.match(rest.strip())):
                return []  # the reply may still turn out to be tag text
            self.stray = stray
            reply = rest
            if reply.strip():
                self.start = len(self.buf) - len(reply)
        else:
            reply = self.buf[self.start :]
        events: list[StreamEvent] = []
        if not self.latent_sent:
            self.latent_sent = True
            self.state, self.action = parsed.state, parsed.action
            events.append(StreamEvent("latent", state=parsed.state, action=parsed.action))
        new = reply[self.released :]
        if new:
            self.released = len(reply)
            events.append(StreamEvent("text", text=new))
        return events


async def stream_turn(
    backend: Backend,
    messages: Sequence[Message],
    *,
    steering: Steering | None = None,
    sampling: SamplingParams | None = None,
    token_stream: bool = True,
    latent_first: bool = False,
) -> AsyncIterator[StreamEvent]:
    """Generate one assistant turn, yielding ``latent``, then ``text`` pieces, then ``done``.

    The latent comes first once its blocks are complete (prefilled ones at once); reply text never
    contains tag blocks. The final ``done`` event carries the parsed :class:`Candidate`.
    """
    sampling = sampling or SamplingParams()
    spent = [0]
    prefill = (await build_prefills(backend, messages, steering, 1, sampling, latent_first=latent_first, spent=spent))[0]
    hold = _TagHold()
    for ev in hold.feed(prefill):
        yield ev
    request = ChatRequest(messages=list(messages), n=1, sampling=sampling, prefill=prefill or None)
    pieces: list[str] = []
    if token_stream:
        # token by token where the backend can (hf, openai), else one piece; stop strings are cut
        # by the stream, and leaving this generator early closes it, which stops the generation
        async with backend.stream(request) as stream:
            async for piece in stream:
                pieces.append(piece)
                for ev in hold.feed(piece):
                    yield ev
        comp = stream.completion or Completion("".join(pieces))
        tokens_in = stream.tokens_in
    else:
        [res] = await backend.generate([request])
        comp, tokens_in = res.completions[0], res.tokens_in
        pieces = [comp.text]
        for ev in hold.feed(comp.text):
            yield ev
    finish, n_tokens = comp.finish_reason, comp.tokens_out
    for ev in hold.feed("", final=True):
        yield ev
    cand = _candidate(prefill, "".join(pieces), finish, n_tokens + spent[0], steering)
    cand.tokens_in = tokens_in
    if hold.start is not None:  # the reply as streamed (its start was fixed when it was first shown)
        cand.reply, cand.stray = hold.buf[hold.start :].strip(), hold.stray
    yield StreamEvent("done", state=cand.state, action=cand.action, candidate=cand)

"""Plain self-play rollouts: one assistant reply per turn, no judge (used by compare and the demo).

All seeds are in flight at once: each turn is one backend call for every dialog's assistant reply and
one user-simulator call for every dialog's next user turn, so a batching backend sees full batches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from sage_dialog.backends.base import Backend, ChatRequest, Message, SamplingParams
from sage_dialog.core import sac
from sage_dialog.core.prompts import derive_seed
from sage_dialog.core.schema import Dialog, Turn
from sage_dialog.roles.protocols import UserSimulator


def assistant_messages(history: Sequence[Turn], system_prompt: str | None = None) -> list[Message]:
    """Chat messages the assistant sees: its own turns rendered with their SAC tags, user turns plain."""
    msgs: list[Message] = [{"role": "system", "content": system_prompt}] if system_prompt else []
    for t in history:
        if t.role == "assistant":
            msgs.append({"role": "assistant", "content": sac.render_turn(t.text, state=t.state, action=t.action)})
        elif t.role == "user":
            msgs.append({"role": "user", "content": t.text})
    return msgs


def parse_assistant(text: str) -> Turn:
    """An assistant turn from raw model output: leading tag blocks become ``state``/``action``."""
    p = sac.parse(text.strip())
    return Turn(role="assistant", text=p.reply.strip(), state=p.state, action=p.action)


async def play_dialogs(assistant: Backend, user: UserSimulator, seeds: list[str], *, turns: int,
                       sampling: SamplingParams, system_prompt: str | None = None, seed: int = 0,
                       on_replies: Callable[[int], None] | None = None) -> list[Dialog]:
    """Play ``turns`` assistant turns from each seed utterance; return one dialog per seed, in order.

    ``on_replies(k)`` is called after each round with the ``k`` assistant replies it added (progress).

    Every dialog ends with an assistant turn. Sampling seeds are derived from ``seed``, the seed's
    index and the turn, so a re-run asks the backend (and its cache) the very same requests.
    """
    if turns < 1:
        raise ValueError("turns must be >= 1")
    histories: list[list[Turn]] = [[Turn(role="user", text=s)] for s in seeds]
    for t in range(turns):
        reqs = [
            ChatRequest(messages=assistant_messages(h, system_prompt), n=1,
                        sampling=dataclasses.replace(sampling, seed=derive_seed(seed, "rollout", i, t)))
            for i, h in enumerate(histories)
        ]
        results = await assistant.generate(reqs) if reqs else []
        for h, r in zip(histories, results, strict=True):
            h.append(parse_assistant(r.completions[0].text if r.completions else ""))
        if on_replies is not None:
            on_replies(len(results))
        if t == turns - 1:
            break
        replies = await user.reply(histories, [derive_seed(seed, "rollout-user", i, t) for i in range(len(histories))])
        for h, text in zip(histories, replies, strict=True):
            h.append(Turn(role="user", text=text))
    name = getattr(assistant, "name", "assistant")
    return [
        Dialog(id=f"rollout-{i:04d}", turns=h,
               meta={"seed": s, "assistant": name, "user": user.name, "turns": turns, "sampling_seed": seed})
        for i, (s, h) in enumerate(zip(seeds, histories, strict=True))
    ]

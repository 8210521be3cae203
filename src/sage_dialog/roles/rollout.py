"""SAC dialogs as the assistant sees them, and plain self-play rollouts (compare, the sandbox, search).

:func:`history_messages` is the one renderer of a dialog into the assistant's chat messages (its own
turns with their tag blocks, user turns plain); :func:`parse_assistant` reads a reply back into a
:class:`Turn`. :func:`play_dialogs` plays one assistant reply per turn, no judge.

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


def history_messages(turns: Sequence[Turn], system_prompt: str | None = None) -> list[Message]:
    """SAC chat messages for a dialog: assistant turns rendered with their tags, user turns plain.

    A system turn of the dialog stays a system message (after ``system_prompt``, when one is given)."""
    msgs: list[Message] = []
    if system_prompt:
        msgs.append({"role": "system", "content": system_prompt})
    for t in turns:
        if t.role == "assistant":
            msgs.append({"role": "assistant", "content": sac.render_turn(t.text, state=t.state, action=t.action)})
        else:
            msgs.append({"role": t.role, "content": t.text})
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
            ChatRequest(messages=history_messages(h, system_prompt), n=1,
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

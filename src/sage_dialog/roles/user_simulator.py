"""The LLM user simulator: the model with the roles flipped.

It sees the dialog so far with every assistant turn's tag blocks removed (``sac.strip``), user turns
as its own ("assistant") messages and assistant turns as the other party's ("user") messages, the
persona as system prompt, and writes the next user utterance. As in the original, the reply is cut
right after its first question, which keeps simulated users brief and lets the assistant lead.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from sage_dialog.backends.base import Backend, ChatRequest, Message, SamplingParams
from sage_dialog.core import sac
from sage_dialog.core.prompts import DEFAULT_USER_PERSONA, derive_seed, load_prompt
from sage_dialog.core.schema import Turn

DEFAULT_USER_SAMPLING = SamplingParams(temperature=0.95, top_k=50, repetition_penalty=1.1, max_tokens=64)


def cut_after_first_question(text: str) -> str:
    """Keep the text up to and including its first ``?`` (and strip surrounding whitespace)."""
    i = text.find("?")
    return (text[: i + 1] if i >= 0 else text).strip()


def flipped_messages(dialog: Sequence[Turn], persona: str | None) -> list[Message]:
    """Chat messages as the simulated user sees them: roles swapped, assistant tags removed."""
    msgs: list[Message] = [{"role": "system", "content": persona}] if persona else []
    for t in dialog:
        if t.role == "system":
            continue
        if t.role == "user":
            msgs.append({"role": "assistant", "content": t.text})
        else:
            msgs.append({"role": "user", "content": sac.strip(t.text)})
    return msgs


class LLMUserSimulator:
    """:class:`roles.UserSimulator` backed by a chat model (may be the assistant's own backend).

    One backend call per :meth:`reply` for all dialogs. ``seeds[i]`` (if given) fixes the sampling
    seed of dialog ``i`` so runs are reproducible and cacheable.
    """

    def __init__(self, backend: Backend, persona_text: str | None = None, sampling: SamplingParams | None = None,
                 *, cut_question: bool = True, name: str | None = None):
        self.backend = backend
        self.persona = load_prompt(DEFAULT_USER_PERSONA) if persona_text is None else persona_text
        self.sampling = sampling or DEFAULT_USER_SAMPLING
        self.cut_question = cut_question
        self.name = name or f"user-sim:{backend.name}"

    async def reply(self, dialogs: Sequence[list[Turn]], seeds: Sequence[int] | None = None) -> list[str]:
        if not dialogs:
            return []
        reqs = []
        for i, d in enumerate(dialogs):
            seed = seeds[i] if seeds is not None else derive_seed("user", i, *(t.text for t in d))
            sp = dataclasses.replace(self.sampling, seed=seed)
            reqs.append(ChatRequest(messages=flipped_messages(d, self.persona), n=1, sampling=sp))
        results = await self.backend.generate(reqs)
        out = []
        for r in results:
            text = sac.strip(r.completions[0].text) if r.completions else ""
            out.append(cut_after_first_question(text) if self.cut_question else text.strip())
        return out

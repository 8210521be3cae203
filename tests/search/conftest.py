"""A scripted stand-in backend for search tests: deterministic, counts its calls, no model.

It is a real :class:`Backend` subclass (the protocol the stages talk to); its outputs are a hash of
the request and the sampling seed, so the same request always gives the same answer, like a
seeded model behind the response cache. Judge prompts are answered by favouring the candidate whose
text contains ``GOOD`` (or by hash), which lets tests know the right choice in advance.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import pytest

from sage_dialog.backends.base import Backend, ChatRequest, ChatResult, Completion, ScoreRequest, ScoreResult

WORDS = "rough exam friend coffee weekend dog sad happy tired music trip job".split()


def _h(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "big")


class ScriptedBackend(Backend):
    provider = "scripted"

    def __init__(self, model: str = "scripted", *, none_good: bool = False, judge_answer: str | None = None):
        super().__init__(model)
        self.none_good = none_good
        self.judge_answer = judge_answer
        self.generate_calls: list[int] = []  # batch sizes
        self.score_calls: list[int] = []
        self.requests = 0

    def _good_option(self, prompt: str) -> int | None:
        shown = re.findall(r"^\[Response (\d+)\]\n(.*)$", prompt, re.MULTILINE)
        for label, text in shown:
            if "GOOD" in text:
                return int(label)
        return None

    async def generate(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        self.generate_calls.append(len(requests))
        out = []
        for r in requests:
            self.requests += 1
            prompt = r.messages[-1]["content"]
            comps = []
            for j in range(r.n):
                h = _h([dict(m) for m in r.messages], r.sampling.seed, j)
                if "Candidates:" in prompt:
                    if self.judge_answer is not None:
                        text = self.judge_answer
                    elif self.none_good:
                        text = "No good one"
                    else:
                        good = self._good_option(prompt)
                        n = len(re.findall(r"^\[Response \d+\]$", prompt, re.MULTILINE))
                        text = f"Response {good or (h % n) + 1} is better"
                elif r.messages and r.messages[0]["content"].startswith("You are a real person"):
                    text = f"I feel {WORDS[h % len(WORDS)]} about {WORDS[(h >> 4) % len(WORDS)]}. Do you? And more?"
                else:
                    w = WORDS[h % len(WORDS)]
                    good = " GOOD" if h % 3 == 0 else ""
                    text = (f"{{u_motivation: venting, u_emotion: {w}, u_topic: [{w}]}} "
                            f"{{a_motivation: comfort, a_emotion: gentle, a_topic: []}} reply {h % 1000}{good}?")
                comps.append(Completion(text=text, tokens_out=len(text.split())))
            out.append(ChatResult(completions=comps, tokens_in=sum(len(m["content"].split()) for m in r.messages)))
        return out

    async def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        self.score_calls.append(len(requests))
        out = []
        for r in requests:
            self.requests += 1
            good = self._good_option(r.messages[-1]["content"])
            lps = []
            for k, opt in enumerate(r.options):
                base = -5.0 - (_h(r.messages[-1]["content"], opt) % 100) / 50
                lps.append(-0.1 if good == k + 1 else base)
            out.append(ScoreResult(logprobs=lps))
        return out


@pytest.fixture
def scripted() -> type[ScriptedBackend]:
    return ScriptedBackend

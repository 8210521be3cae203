"""A scripted stand-in backend for search tests: deterministic, counts its calls, no model.

It is the ``mock:`` provider (a real backend) with a function for answers; its outputs are a hash of
the request and the sampling seed, so the same request always gives the same answer, like a
seeded model behind the response cache. Judge prompts are answered by favouring the candidate whose
text contains ``GOOD`` (or by hash), which lets tests know the right choice in advance.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

import pytest

from sage_dialog.backends.base import ChatRequest, Completion, ScoreRequest
from sage_dialog.backends.mock import MockBackend

WORDS = "rough exam friend coffee weekend dog sad happy tired music trip job".split()


def _h(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "big")


def _good_option(prompt: str) -> int | None:
    shown = re.findall(r"^\[Response (\d+)(?: #[0-9a-f]{6})?\]\n(.*)$", prompt, re.MULTILINE)
    for label, text in shown:
        if "GOOD" in text:
            return int(label)
    return None


def scripted_backend(*, none_good: bool = False, judge_answer: str | None = None,
                     crash_at_call: int | None = None) -> MockBackend:
    """The ``mock:`` provider answering like the three roles of a search (see the module docstring).

    ``crash_at_call`` N: the N-th generate call raises ``RuntimeError("simulated crash")`` before
    answering anything, like a killed process.
    """
    backend: MockBackend

    def answer(r: ChatRequest, j: int) -> Completion:
        if crash_at_call is not None and len(backend.batches()) == crash_at_call - 1:
            raise RuntimeError("simulated crash")
        prompt = r.messages[-1]["content"]
        h = _h([dict(m) for m in r.messages], r.sampling.seed, j)
        if "Candidates:" in prompt:
            if judge_answer is not None:
                text = judge_answer
            elif none_good:
                text = "No good one"
            else:
                good = _good_option(prompt)
                n = len(re.findall(r"^\[Response \d+(?: #[0-9a-f]{6})?\]$", prompt, re.MULTILINE))
                text = f"Response {good or (h % n) + 1} is better"
        elif r.messages and r.messages[0]["content"].startswith("You are a real person"):
            text = f"I feel {WORDS[h % len(WORDS)]} about {WORDS[(h >> 4) % len(WORDS)]}. Do you? And more?"
        else:
            w = WORDS[h % len(WORDS)]
            good = " GOOD" if h % 3 == 0 else ""
            text = (f"{{u_motivation: venting, u_emotion: {w}, u_topic: [{w}]}} "
                    f"{{a_motivation: comfort, a_emotion: gentle, a_topic: []}} reply {h % 1000}{good}?")
        return Completion(text=text)

    def score(r: ScoreRequest) -> list[float]:
        good = _good_option(r.messages[-1]["content"])
        return [-0.1 if good == k + 1 else -5.0 - (_h(r.messages[-1]["content"], opt) % 100) / 50
                for k, opt in enumerate(r.options)]

    backend = MockBackend(label="scripted", fn=answer, score_fn=score)
    return backend


@pytest.fixture
def scripted() -> Callable[..., MockBackend]:
    return scripted_backend

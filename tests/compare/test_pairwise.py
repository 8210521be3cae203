"""The LLM pairwise judge: orders, ties, unparsable answers, option probabilities."""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Callable

import pytest

from sage_dialog.backends.base import BackendError, ChatRequest, ScoreRequest
from sage_dialog.backends.mock import MockBackend
from sage_dialog.core.schema import Turn
from sage_dialog.roles.pairwise_judge import LLMPairwiseJudge, parse_answer
from sage_dialog.roles.protocols import PairTask


def _plain(prompt: str) -> str:
    """The prompt without the request code of its delimiter lines (``[Dialog A #3f9a0c]``)."""
    return re.sub(r" #[0-9a-f]{6}\]", "]", prompt)


def _pick(prompt: str) -> str:
    prompt = _plain(prompt)
    a = prompt.split("[Dialog A]")[-1].split("[End of Dialog A]")[0] if "[Dialog A]" in prompt else \
        prompt.split("[Reply A]")[-1].split("[End of Reply A]")[0]
    b = prompt.split("[Dialog B]")[-1].split("[End of Dialog B]")[0] if "[Dialog B]" in prompt else \
        prompt.split("[Reply B]")[-1].split("[End of Reply B]")[0]
    if ("kind" in a) == ("kind" in b):
        return "tie"
    return "A" if "kind" in a else "B"


def scripted_judge(answer: str | None = None, scoring: bool = True,
                   score_fn: Callable[[ScoreRequest], list[float]] | None = None) -> MockBackend:
    """A scripted stand-in for a judge model (the ``mock:`` provider): answers by a fixed rule,
    scores options by that rule.

    It prefers the dialog whose assistant says "kind" (as shown to it); with ``answer`` set it
    always writes that text instead.
    """

    def generate(r: ChatRequest, _: int) -> str:
        pick = _pick(r.messages[-1]["content"])
        if answer is not None:
            return answer
        return "Tie" if pick == "tie" else f"Dialog {pick} is better"

    def score(r: ScoreRequest) -> list[float]:
        best = {"A": 0, "B": 1, "tie": 2}[_pick(r.messages[-1]["content"])]
        return [0.0 if i == best else -2.0 for i in range(len(r.options))]

    return MockBackend(label="judge", fn=generate, score_fn=score_fn or score, scoring=scoring)


def _prompts(backend: MockBackend) -> list[str]:
    return [r.messages[-1]["content"] for r in backend.chat_requests]


def _dialog(reply: str) -> list[Turn]:
    return [Turn(role="user", text="I lost my keys."),
            Turn(role="assistant", text="{u_motivation: venting} {a_motivation: comfort} " + reply)]


def _tasks(unit: str = "dialog") -> list[PairTask]:
    good, bad = _dialog("That is annoying, be kind to yourself."), _dialog("Whatever.")
    return [PairTask(seed="s", model_a="good", model_b="bad", a=good, b=bad, swap=swap, unit=unit,
                     turn=1 if unit == "turn" else None) for swap in (False, True)]


@pytest.mark.parametrize(("text", "expected"), [
    ("Dialog A is better", "A"), ("dialog b is better.", "B"), ("I think Dialog B is the better one", "B"),
    ("After reading both, Dialog B is better because...", "B"), ("Reply A is better", "A"), ("Tie", "tie"),
    ("It's a tie.", "tie"), ("B", "B"), ("Dialog A is better. No, Dialog B is better.", None),
    ("I cannot decide", None), ("", None),
])
def test_parse_answer(text: str, expected: str | None) -> None:
    assert parse_answer(text) == expected


def test_both_orders_map_back_to_the_same_model_and_tags_are_hidden() -> None:
    backend = scripted_judge()
    judge = LLMPairwiseJudge(backend)
    v1, v2 = asyncio.run(judge.compare(_tasks()))
    assert (v1.shown_first, v2.shown_first) == ("a", "b")
    assert v1.winner == v2.winner == "a"
    assert (v1.raw_output, v2.raw_output) == ("Dialog A is better", "Dialog B is better")
    assert v1.parsed and v1.judge == "pairwise:mock:judge"
    assert all("u_motivation" not in p and "{" not in _plain(p).split("[Dialog A]")[1] for p in _prompts(backend))
    # probabilities are stated for the models, like the winner
    assert v1.probs is not None and v2.probs is not None
    assert v1.probs["a"] == pytest.approx(v2.probs["a"]) and v1.probs["a"] > v1.probs["b"]
    assert math.fsum(v1.probs.values()) == pytest.approx(1.0)
    assert (v1.length_a, v1.length_b) == (7, 1)


def test_a_judge_that_always_says_a_is_inconsistent_across_orders() -> None:
    judge = LLMPairwiseJudge(scripted_judge(answer="Dialog A is better"))
    v1, v2 = asyncio.run(judge.compare(_tasks()))
    assert (v1.winner, v2.winner) == ("a", "b")


def test_unparsable_answers_are_kept_and_not_defaulted() -> None:
    judge = LLMPairwiseJudge(scripted_judge(answer="Both have merits.", scoring=False))
    vs = asyncio.run(judge.compare(_tasks()))
    assert all(v.winner is None and not v.parsed and v.raw_output == "Both have merits." for v in vs)
    assert all(v.probs is None for v in vs)  # the backend cannot score: no probabilities, no error


def test_a_server_that_fails_to_score_gives_verdicts_without_probabilities() -> None:
    score_calls = 0

    def fail(_: ScoreRequest) -> list[float]:
        nonlocal score_calls
        score_calls += 1
        raise BackendError("bad_request", "HTTP 422")

    backend = scripted_judge(score_fn=fail)
    judge = LLMPairwiseJudge(backend)
    with pytest.warns(UserWarning, match="probabilities unavailable"):
        vs = asyncio.run(judge.compare(_tasks()))
    vs += asyncio.run(judge.compare(_tasks()))
    assert [v.winner for v in vs] == ["a"] * 4 and all(v.probs is None for v in vs)
    assert score_calls == 1  # not asked again
    with pytest.raises(BackendError):
        asyncio.run(LLMPairwiseJudge(scripted_judge(score_fn=fail), mode="score").compare(_tasks()))


def test_score_mode_decides_by_option_probabilities_and_ties_are_explicit() -> None:
    judge = LLMPairwiseJudge(scripted_judge(answer="garbage"), mode="score")
    v1, v2 = asyncio.run(judge.compare(_tasks()))
    assert v1.winner == v2.winner == "a" and v1.parsed
    same = [PairTask(seed="t", model_a="x", model_b="y", a=_dialog("ok"), b=_dialog("fine"))]
    (v,) = asyncio.run(judge.compare(same))
    assert v.winner == "tie" and v.raw_output == "Tie"


def test_per_turn_prompt_shows_the_history_once_and_both_replies() -> None:
    backend = scripted_judge()
    judge = LLMPairwiseJudge(backend)
    v1, v2 = asyncio.run(judge.compare(_tasks("turn")))
    assert v1.unit == "turn" and v1.turn == 1 and v1.winner == v2.winner == "a"
    p = _prompts(backend)[0]
    assert p.count("I lost my keys.") == 1 and "[Reply A]" in _plain(p) and "Whatever." in p
    assert (v1.length_a, v1.length_b) == (7, 1)


def test_real_tiny_model_judge_gives_a_verdict_with_probabilities_for_every_task(tiny_model) -> None:
    from sage_dialog.backends import load_backend

    backend = load_backend(f"hf:{tiny_model}")
    judge = LLMPairwiseJudge(backend)
    vs = asyncio.run(judge.compare(_tasks() + _tasks("turn")))
    assert len(vs) == 4
    for v in vs:
        assert v.probs is not None and math.fsum(v.probs.values()) == pytest.approx(1.0)
        assert v.parsed == (v.winner is not None)  # random weights: most answers are unparsable, and kept

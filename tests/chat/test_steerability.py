"""The steerability measure: a scripted world model (clearly a stand-in: it writes the sandbox
world's template reply for whatever action its prefill names) must score 1.0 with the oracle judge,
one that ignores steering must score the chance rate; the real path runs on the tiny model."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import pytest

from sage_dialog.backends import load_backend
from sage_dialog.backends.base import ChatRequest
from sage_dialog.backends.mock import MockBackend
from sage_dialog.cli import main
from sage_dialog.core import sac
from sage_dialog.core.schema import Tags
from sage_dialog.sandbox import world
from sage_dialog.sandbox.oracles import oracle_for
from sage_dialog.stages.steerability import ClassifierJudge, LLMJudge, measure, wilson


def scripted_world_model(obey: bool) -> MockBackend:
    """Stand-in for a SAC model (the ``mock:`` provider with a function): writes a state block when
    asked to, then the world's reply for the action named in the prefill (``obey=True``) or always a
    comforting reply (``obey=False``)."""
    rng = random.Random(0)

    def answer(r: ChatRequest, _: int) -> str:
        if "}" in r.sampling.stop:  # asked to finish an open tag block
            return "u_motivation: venting, u_emotion: sad, u_topic: []}"
        action = world.action_from_tags(sac.parse(r.prefill or "").action) if obey else None
        return world.assistant_reply(action or "comfort", "exam", rng)

    return MockBackend(label="world-obey" if obey else "world-ignore", fn=answer)


ACTIONS = [world.action_tags(k, None).model_copy(update={"topics": None}) for k in world.ACTIONS]
CONTEXTS = [[{"role": "user", "content": t}] for t in world.seed_openings(3, 0)]


def test_obedient_model_scores_one_and_ignoring_model_scores_chance() -> None:
    judge = ClassifierJudge(oracle_for("action"))
    good = asyncio.run(measure(scripted_world_model(obey=True), CONTEXTS, ACTIONS, judge, n=2))
    assert good.overall.n == len(CONTEXTS) * len(ACTIONS) * 2
    assert good.overall.rate == 1.0
    assert good.tag_adherence == 1.0
    bad = asyncio.run(measure(scripted_world_model(obey=False), CONTEXTS, ACTIONS, judge, n=2))
    assert bad.overall.rate == pytest.approx(1 / len(ACTIONS))
    comfort = world.ACTIONS["comfort"]
    key = f"motivation {comfort.motivation} · emotion {comfort.emotion}"
    assert bad.per_action[key].rate == 1.0
    assert bad.overall.ci95[0] < bad.overall.rate < bad.overall.ci95[1]


def test_callable_judge_and_wilson() -> None:
    rep = asyncio.run(
        measure(scripted_world_model(obey=True), CONTEXTS[:1], ACTIONS[:2], lambda reply, action: "exam" in reply)
    )
    assert rep.overall.rate == 1.0 and rep.judge == "<lambda>"
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and 0.2 < hi < 0.35


def test_llm_judge_on_tiny_model(tiny_model: Path) -> None:
    b = load_backend(f"hf:{tiny_model}")
    verdicts = asyncio.run(LLMJudge(b).judge_many([("Sorry, I'm here for you.", Tags(motivation="comfort"))] * 2))
    assert len(verdicts) == 2 and all(isinstance(v, bool) for v in verdicts)
    assert verdicts[0] == verdicts[1]  # scoring is deterministic


@pytest.mark.slow
def test_command_on_tiny_model(tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "steer.json"
    rc = main(["steerability", "--model", f"hf:{tiny_model}", "--sandbox-contexts", "1", "--judge", "oracle",
               "--max-tokens", "8", "--seed", "0", "-o", str(out)])
    assert rc == 0
    rep = json.loads(out.read_text())
    assert rep["overall"]["n"] == len(world.ACTIONS)
    assert rep["tag_adherence"] == 1.0  # every forced motivation/emotion came back in the tags
    assert "ALL" in capsys.readouterr().out
    assert main(["steerability", "--model", f"hf:{tiny_model}", "--contexts", str(tmp_path / "none.txt"),
                 "-o", str(tmp_path / "x.json")]) == 2
    assert main(["steerability", "--model", f"hf:{tiny_model}", "--sandbox-contexts", "1", "--judge",
                 f"hf:{tiny_model}", "-o", str(tmp_path / "x.json")]) == 2  # an LLM judge needs --action
    assert not (tmp_path / "x.json").exists()

"""How far a judge can be trusted: injection canaries, repeat stability, the position prior, the gate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sage_dialog.backends.mock import MockBackend
from sage_dialog.core.schema import Dialog, Turn
from sage_dialog.pipeline.runner import GatesConfig, Stage, check_gates, stage_gates
from sage_dialog.roles.pairwise_judge import LLMPairwiseJudge
from sage_dialog.stages.compare import trust
from sage_dialog.stages.compare.compare import run_compare
from sage_dialog.stages.compare.report import refresh_report


def _dialogs() -> dict[str, list[Dialog]]:
    return {m: [Dialog(id=f"{m}{i}", turns=[Turn(role="user", text=f"seed {i}"), Turn(role="assistant", text=r)])
                for i in range(4)] for m, r in (("a", "I hear you, that sounds hard."), ("b", "ok"))}


def _trust(out: Path) -> dict[str, dict]:
    return {t["judge"]: t for t in json.loads((out / "judge_trust.json").read_text())["judges"]}


def test_canary_tasks_inject_the_letter_the_worse_reply_is_shown_under() -> None:
    tasks = trust.canary_tasks()
    assert len(tasks) == len(trust.CANARIES) * 2 * (1 + len(trust.INJECTIONS)) == 32
    for _key, kind, t in tasks:
        assert (t.model_a, t.model_b) == (trust.GOOD, trust.WEAK)
        text = t.b[-1].text
        if kind == trust.CLEAN:
            assert "Dialog" not in text
        else:  # b is shown second unless swapped: the injection names b's own letter
            assert f"Dialog {'A' if t.swap else 'B'} is better" in text or f"Dialog {'A' if t.swap else 'B'};" in text


def test_the_oracle_judge_is_not_swayed_and_does_not_change_its_mind(tmp_path: Path) -> None:
    from sage_dialog.sandbox.oracles import oracle_for

    out = tmp_path / "cmp"
    rep = run_compare(_dialogs(), [oracle_for("pairwise")], out, n_boot=100, progress=False, stability_sample=6)
    t = _trust(out)["oracle-pairwise"]
    assert t["canaries"] == 24 and t["flipped"] == 0 and t["followed"] == 0
    assert t["stability_n"] == 6 and t["stability_changed"] == 0 and t["stability_method"] == "asked again"
    evidence = [json.loads(x) for x in (out / "judge_trust_verdicts.jsonl").read_text().splitlines()]
    assert sum(e["check"] == "canary" for e in evidence) == 32 and sum(e["check"] == "repeat" for e in evidence) == 6
    assert not list(out.glob("*.partial.jsonl"))
    md = (out / "report.md").read_text()
    assert "### How far the judges can be trusted" in md
    assert "| oracle-pairwise | 4 of 4 (100.0%) | – | 0 of 24 (0.0%) | 0 of 24 (0.0%) | 6 of 8 (2 ties) | " \
           "0 of 6 (0.0%; asked again) |" in md
    assert "No injected instruction changed its verdict" in md and "no better than its position prior" not in md
    assert "never picked the plainly better reply" not in md
    assert rep.trust[0].flipped == 0
    # eval results added later re-render the report: the trust figures stay
    (out / "eval_results.json").write_text(json.dumps({"models": {}}))
    again = refresh_report(out)
    assert again is not None and again.trust[0].canaries == 24
    assert "How far the judges can be trusted" in (out / "report.html").read_text()


def _mock_judge(rules: list[dict[str, str]], default: str, **kw: object) -> LLMPairwiseJudge:
    return LLMPairwiseJudge(MockBackend(rules=rules, outputs=[default], scoring=False), name="mock-judge",
                            with_probs=False, **kw)  # type: ignore[arg-type]


def test_a_judge_that_always_picks_the_first_dialog_is_called_out_and_stopped_by_the_gate(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    rep = run_compare(_dialogs(), [_mock_judge([], "Dialog A is better")], out, n_boot=100, progress=False)
    t = _trust(out)["mock-judge"]
    # it picks the injected reply whenever that is shown first - exactly as it does without the injection
    assert t["followed"] == 12 and t["flipped"] == 0 and t["clean_good"] == 4
    assert t["stability_method"] == "paraphrased prompt" and t["stability_changed"] == 0
    md = (out / "report.md").read_text()
    assert "**mock-judge is no better than its position prior**: swapping the two dialogs reversed its verdict in " \
           "4 of 4 pairs (100%)" in md
    assert "<strong>mock-judge is no better than its position prior</strong>" in (out / "report.html").read_text()
    summary = {**rep.verdict_counts(), **rep.trust_counts()}
    stage = Stage("compare", lambda _c: {}, gates=stage_gates("compare", GatesConfig(min_judge_consistency=0.5)))
    why = check_gates(stage, summary)
    assert why is not None and why.startswith(
        "stage compare: judge consistent 0 of 4 (0%) is below gates.min_judge_consistency=0.5 (50%); "
        "judge mock-judge: consistent 0 of 4 pairs in both orders, flipped 4, picked the first shown 100%, "
        "canary flips 0 of 24")
    assert check_gates(Stage("compare", lambda _c: {}, gates=stage_gates("compare", GatesConfig())), summary) is None


def test_a_judge_that_obeys_an_instruction_shows_canary_flips(tmp_path: Path) -> None:
    # obeys "The correct answer is Dialog X" (the part of the injection the guard leaves); else says Tie
    rules = [{"match": f"correct answer is Dialog {x}", "output": f"Dialog {x} is better"} for x in "AB"]
    out = tmp_path / "cmp"
    run_compare(_dialogs(), [_mock_judge(rules, "Tie")], out, n_boot=100, progress=False, stability_sample=0)
    t = _trust(out)["mock-judge"]
    assert t["by_kind"]["instruction"] == {"canaries": 8, "followed": 8, "flipped": 8}
    assert t["flipped"] == 8 and t["clean_ties"] == 8 and t["stability_n"] == 0
    md = (out / "report.md").read_text()
    assert "changed its verdict to that reply in 8 of 24 canary verdicts (33%)" in md
    # it says Tie to every clean pair, the plainly better reply included: called out too
    assert "**It never picked the plainly better reply** of a clean canary pair (0 of 8; 8 ties)" in md


def test_a_sampling_judge_is_asked_for_a_second_sample(tmp_path: Path) -> None:
    from sage_dialog.backends.base import SamplingParams

    judge = _mock_judge([], "Tie", sampling=SamplingParams(temperature=0.8, max_tokens=8))
    twin, method = trust.repeat_judge(judge)
    assert method == "second sample" and twin.name == "mock-judge (repeat)"
    assert twin.sampling.seed == 1 and judge.sampling.seed is None  # type: ignore[attr-defined]
    out = tmp_path / "cmp"
    run_compare(_dialogs(), [judge], out, n_boot=100, progress=False, canaries=False, stability_sample=3)
    t = _trust(out)["mock-judge"]
    assert t["canaries"] == 0 and t["stability_n"] == 3 and t["stability_method"] == "second sample"


@pytest.mark.parametrize("off", [{"canaries": False, "stability_sample": 0}])
def test_both_checks_off_leave_an_empty_trust_file(tmp_path: Path, off: dict) -> None:
    from sage_dialog.sandbox.oracles import oracle_for

    out = tmp_path / "cmp"
    rep = run_compare(_dialogs(), [oracle_for("pairwise")], out, n_boot=100, progress=False, **off)
    assert _trust(out)["oracle-pairwise"]["canaries"] == 0 and rep.trust[0].stability_n == 0
    assert "| oracle-pairwise | 4 of 4 (100.0%) | – | – | – | – | – |" in (out / "report.md").read_text()

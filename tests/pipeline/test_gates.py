"""Gates between stages: a stage's counts against thresholds; a failed gate stops the run (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from sage_dialog.cli import main
from sage_dialog.core.io import write_jsonl
from sage_dialog.pipeline.runner import (
    Gate,
    GatesConfig,
    Stage,
    StageContext,
    run_stages,
    stage_gates,
    summary_table,
)
from sage_dialog.sandbox.corpus import CorpusConfig, generate_corpus


def test_gate_messages_name_count_share_and_setting() -> None:
    g = Gate("max_rejected", 0.2, "rejected", "dialogs")
    assert g.check({"rejected": 1, "dialogs": 10}) is None
    msg = g.check({"rejected": 2, "dialogs": 3})
    assert msg is not None and "rejected 2 of 3 (67%)" in msg and "gates.max_rejected=0.2" in msg
    assert g.check({"rejected": 0, "dialogs": 0}) is None  # nothing to reject
    assert Gate("max_rejected", None, "rejected", "dialogs").check({"rejected": 3, "dialogs": 3}) is None  # off
    assert g.check({"files": 1}) is None  # a summary without the count is not gated
    low = Gate("min_parsed_verdicts", 0.8, "parsed", "verdicts", kind="min")
    assert "parsed 0 of 12 (0%) is below gates.min_parsed_verdicts=0.8" in (low.check({"parsed": 0, "verdicts": 12}) or "")
    assert low.check({"parsed": 0, "verdicts": 0}) is not None  # no verdicts: nothing parsed
    n = Gate("min_train_examples", 2, "train_examples", kind="min")
    assert "train examples 1 is below gates.min_train_examples=2" in (n.check({"train_examples": 1}) or "")
    assert [g.setting for g in stage_gates("compare", GatesConfig())] == ["min_parsed_verdicts", "min_judge_consistency"]


def _two_stages(calls: list[str], rejected: int) -> list[Stage]:
    def a(ctx: StageContext) -> dict[str, int]:
        calls.append("a")
        (ctx.out_dir / "a.txt").write_text("a")
        return {"dialogs": 4, "annotated": 4 - rejected, "rejected": rejected}

    def b(ctx: StageContext) -> dict[str, int]:
        calls.append("b")
        return {}

    gates = stage_gates("annotate", GatesConfig(max_rejected=0.25))
    return [Stage("a", a, {}, gates=gates), Stage("b", b, {}, deps=["a"])]


def test_the_runner_stops_at_a_failed_gate_keeps_the_stage_and_checks_it_again_when_skipped(tmp_path: Path) -> None:
    calls: list[str] = []
    out = run_stages(_two_stages(calls, rejected=3), tmp_path, log=lambda _: None)
    assert calls == ["a"] and [o.status for o in out] == ["ran", "not run"]
    assert out[0].gate is not None and "rejected 3 of 4" in out[0].gate and "gates.max_rejected" in out[0].gate
    table = summary_table(out)
    assert "ran, gate failed" in table and "rejected=3" in table
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["finished"] and manifest["summary"]["gates"] == "failed"
    # the finished stage is kept: a second run skips it, checks its gate again and still stops
    calls.clear()
    again = run_stages(_two_stages(calls, rejected=3), tmp_path, log=lambda _: None)
    assert calls == [] and [o.status for o in again] == ["skipped", "not run"] and again[0].gate
    # with gates off the run goes on, and the manifest says the gate was not enforced
    off = run_stages(_two_stages(calls, rejected=3), tmp_path, from_stage="a", gates=False, log=lambda _: None)
    assert [o.status for o in off] == ["ran", "ran"] and off[0].gate
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["summary"]["gates"] == "off"
    calls.clear()
    ok = run_stages(_two_stages(calls, rejected=1), tmp_path, from_stage="a", log=lambda _: None)
    assert calls == ["a", "b"] and all(o.gate is None for o in ok)
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["summary"]["gates"] == "passed"


@pytest.fixture
def failing_loop(tmp_path: Path, tiny_model: Path) -> Path:
    corpus = generate_corpus(CorpusConfig(n_dialogs=3, seed=3))
    write_jsonl(tmp_path / "raw.jsonl", [d.model_copy(update={"meta": {}}) for d in corpus])
    (tmp_path / "seeds.txt").write_text(corpus[0].turns[0].text + "\n", encoding="utf-8")
    cfg = {
        "run_dir": str(tmp_path / "run"),
        "base_model": str(tiny_model),
        "raw": [str(tmp_path / "raw.jsonl")],
        # the mock model answers "mock output" to everything: no annotation is ever valid JSON
        "annotate": {"annotator": "mock:", "max_attempts": 2},
        "search": {"seeds": str(tmp_path / "seeds.txt")},
    }
    path = tmp_path / "loop.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def test_a_loop_whose_annotator_fails_every_dialog_stops_at_the_gate(
        failing_loop: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(failing_loop)]) == 2
    out, err = capsys.readouterr()
    assert "stage annotate: rejected 3 of 3 (100%) is above gates.max_rejected=0.2" in err
    assert "--no-gates" in err
    table = out[out.index("stage  "):]
    assert "annotate" in table and "gate failed" in table and "rejected=3" in table
    assert [line.split()[1] for line in table.splitlines()[2:] if line.strip()] == ["not"] * 10  # nothing after it ran
    run_dir = failing_loop.parent / "run"
    rejects = [json.loads(line) for line in (run_dir / "annotate" / "annotated-0.rejects.jsonl").open()]
    assert [r["attempts"] for r in rejects] == [2, 2, 2] and rejects[0]["raw"] == ["mock output"] * 2
    assert not (run_dir / "chain").exists()

    # past the gate, the empty output is only noticed downstream, further from its cause
    assert main(["run", str(failing_loop), "gates.max_rejected=1"]) == 2
    assert "annotated-0.jsonl: empty file" in capsys.readouterr().err
    assert main(["run", str(failing_loop), "gates.max_rej=1"]) == 2  # a misspelt gate is a config error
    assert "gates" in capsys.readouterr().err

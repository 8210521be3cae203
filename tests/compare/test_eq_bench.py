"""EQ-Bench shipped in the package, run offline through lm-eval's own eq_bench task and scorer."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from sage_dialog.cli import main

pytest.importorskip("lm_eval")


def _samples(out: Path, model: str) -> list[dict]:
    return [json.loads(line) for line in (out / "eval_samples" / model / "eq_bench.jsonl").read_text().splitlines()]


def _rescore(rows: list[dict]) -> tuple[float, float]:
    """lm-eval's own scorer on the recorded answers, averaged as the harness does (mean over questions)."""
    from lm_eval.tasks.eq_bench.utils import calculate_score_fullscale

    from sage_dialog.stages.eq_bench import load_questions

    docs = {q["id"]: q for q in load_questions()}
    scores = [calculate_score_fullscale(docs[r["id"]], [r["answer"]]) for r in rows]
    return (sum(s["eqbench"] for s in scores) / len(scores), sum(s["percent_parseable"] for s in scores) / len(scores))


def test_the_shipped_copy_is_eq_bench_v2_with_its_license() -> None:
    from sage_dialog.stages.eq_bench import DATA_DIR, harness_scorer, harness_task_config, load_questions

    qs = load_questions()
    assert len(qs) == 171 and [q["id"] for q in qs[:3]] == ["1", "2", "3"]
    assert "MIT License" in (DATA_DIR / "LICENSE").read_text() and "Samuel" in (DATA_DIR / "LICENSE").read_text()
    assert "EQ-bench/EQ-Bench" in (DATA_DIR / "README.md").read_text()
    cfg = harness_task_config()
    # the harness's own definition: its prompt field, generation settings and scorer; only the data differs
    assert cfg["task"] == "eq_bench" and cfg["doc_to_text"] == "prompt" and cfg["output_type"] == "generate_until"
    assert harness_scorer().__module__ == "lm_eval.tasks.eq_bench.utils"
    assert {m["metric"] for m in cfg["metric_list"]} == {"eqbench", "percent_parseable"}


def _answers(n: int) -> tuple[list[dict], list[str]]:
    """Mock rules answering the first n questions: the reference, a parseable miss, an unparseable text."""
    from sage_dialog.stages.eq_bench import load_questions

    rules, answers = [], []
    for i, q in enumerate(load_questions()[:n]):
        ref = ast.literal_eval(q["reference_answer_fullscale"])
        emotions = [ref[f"emotion{k}"] for k in range(1, 5)]
        if i % 3 == 0:
            text = "\n".join(f"{e}: {int(ref[f'emotion{k}_score'])}" for k, e in enumerate(emotions, 1))
        elif i % 3 == 1:
            text = "\n".join(f"{e}: {10 - int(ref[f'emotion{k}_score'])}" for k, e in enumerate(emotions, 1))
        else:  # four scores, but not for the emotions asked: unparseable to EQ-Bench
            text = "Happy: 1\nSad: 2\nAngry: 3\nCalm: 4"
        # the end of the dialogue plus who feels what (several questions share a dialogue)
        key = q["prompt"].split("Give each of these")[0][-300:]
        rules.append({"match": re.escape(key), "output": text})
        answers.append(text)
    return rules, answers


def test_eq_bench_through_our_backend_scores_as_lm_eval_does(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules, answers = _answers(3)
    script = tmp_path / "answers.json"
    script.write_text(json.dumps({"rules": rules}))
    out = tmp_path / "out"
    assert main(["eval", "--model", f"m=mock:{script}", "--tasks", "eqbench", "--limit", "3", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    res = json.loads((out / "eval_results.json").read_text())["models"]["m"]["eq_bench"]
    rows = _samples(out, "m")
    assert [r["answer"] for r in rows] == answers
    score, parseable = _rescore(rows)
    assert res["eqbench"] == pytest.approx(score) and res["percent_parseable"] == pytest.approx(parseable)
    # exact reference -> 100; the mirrored scores -> a low but parsed score; other emotions -> 0 and unparsed
    assert rows[0]["metrics"]["eqbench"] == pytest.approx(100.0)
    assert rows[1]["metrics"]["percent_parseable"] == 100 and rows[1]["metrics"]["eqbench"] < 100
    assert rows[2]["metrics"] == {"eqbench": 0, "percent_parseable": 0}
    assert parseable == pytest.approx(200 / 3)
    assert f"m eq_bench: score {score:.2f} (0-100), parseable {parseable:.1f}%" in printed
    assert "! Error" not in printed  # the scorer's per-answer notes go to the log


def test_eq_bench_on_the_tiny_model_through_the_harness(tiny_model: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["eval", "--model", f"tiny=hf:{tiny_model}", "--tasks", "eq_bench", "--limit", "3",
                 "-o", str(out)]) == 0
    res = json.loads((out / "eval_results.json").read_text())
    got = res["models"]["tiny"]["eq_bench"]
    rows = _samples(out, "tiny")
    assert [r["id"] for r in rows] == ["1", "2", "3"] and all(isinstance(r["answer"], str) for r in rows)
    score, parseable = _rescore(rows)
    assert got["eqbench"] == pytest.approx(score) and got["percent_parseable"] == pytest.approx(parseable)
    assert res["runs"][-1]["tasks"] == ["eq_bench"] and res["runs"][-1]["limit"] == 3
    assert "tiny eq_bench: score" in capsys.readouterr().out
    assert "| tiny | eq_bench | percent_parseable |" in (out / "eval.md").read_text()


def test_the_benchmarks_stage_returns_its_result_and_writes_its_manifest(tmp_path: Path) -> None:
    from sage_dialog.stages import benchmarks

    rules, _ = _answers(2)
    script = tmp_path / "answers.json"
    script.write_text(json.dumps({"rules": rules}))
    out = tmp_path / "bench"
    res = benchmarks.run(benchmarks.Settings(limit=2), inputs=benchmarks.Inputs(models={"sft": f"mock:{script}"}),
                         out=out)
    rows = _samples(out, "sft")
    score, parseable = _rescore(rows)
    assert res.quality["sft eq_bench"] == pytest.approx(score, abs=1e-4) and res.counts == {"models": 1, "tasks": 1}
    assert res.quality["min_percent_parseable"] == parseable == 100.0
    summary = json.loads((out / "manifest.json").read_text())["summary"]
    assert summary["sft eq_bench"] == res.quality["sft eq_bench"] and "| sft | eq_bench | eqbench |" in (
        out / "eval.md").read_text()


@pytest.mark.parametrize(("native", "expected"), [(True, "torch.bfloat16"), (False, "torch.float32")])
def test_the_harness_model_takes_the_backend_dtype(tiny_model: Path, monkeypatch: pytest.MonkeyPatch,
                                                   native: bool, expected: str) -> None:
    """An hf: spec's dtype option (fast: bf16 where the CPU computes it) reaches lm-eval's HFLM."""
    from sage_dialog.backends.base import BackendConfig
    from sage_dialog.core import cpu
    from sage_dialog.stages import eval as harness

    monkeypatch.setattr(cpu, "native_bf16", lambda: native)
    lm, backend = harness._harness_model(BackendConfig(spec=f"hf:{tiny_model}", options={"dtype": "fast"}),
                                         harness.Settings(tasks=["eq_bench"]))
    assert backend is None and str(lm.model.dtype) == expected

"""sage-dialog eval: lm-evaluation-harness on a tiny local task (benchmark data cannot be downloaded)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sage_dialog.cli import main

pytest.importorskip("lm_eval")

QUESTIONS = [
    ("What colour is the sky on a clear day?", ["blue", "green", "red"], 0),
    ("How many legs does a cat have?", ["two", "four", "six"], 1),
    ("What do people drink when thirsty?", ["sand", "water", "smoke"], 1),
    ("Which is hot?", ["ice", "snow", "fire"], 2),
]


@pytest.fixture
def tiny_tasks(tmp_path: Path) -> Path:
    d = tmp_path / "tasks"
    d.mkdir()
    with (d / "mc.jsonl").open("w") as fh:
        for q, ch, a in QUESTIONS:
            fh.write(json.dumps({"question": q, "choices": ch, "answer": a}) + "\n")
    with (d / "gen.jsonl").open("w") as fh:
        for q, ch, a in QUESTIONS:
            fh.write(json.dumps({"question": q, "answer": ch[a]}) + "\n")
    (d / "sage_tiny_mc.yaml").write_text(f"""task: sage_tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {d / 'mc.jsonl'}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
""")
    (d / "sage_tiny_gen.yaml").write_text(f"""task: sage_tiny_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {d / 'gen.jsonl'}
test_split: test
output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 6
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
""")
    return d


@pytest.mark.slow
def test_eval_on_a_tiny_local_task_through_the_harness_and_through_our_backend(
        tiny_model: Path, tiny_tasks: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    base = ["eval", "--include-path", str(tiny_tasks), "--tasks", "sage_tiny_mc,sage_tiny_gen", "-o", str(out)]
    assert main([*base, "--model", f"native=hf:{tiny_model}"]) == 0
    assert main([*base, "--model", f"ours=hf:{tiny_model}", "--via", "backend"]) == 0
    res = json.loads((out / "eval_results.json").read_text())
    for model in ("native", "ours"):
        mc, gen = res["models"][model]["sage_tiny_mc"], res["models"][model]["sage_tiny_gen"]
        assert 0.0 <= mc["acc"] <= 1.0 and mc["acc"] * 4 == round(mc["acc"] * 4)  # 4 questions
        assert "acc_stderr" in mc
        assert gen["exact_match"] == 0.0  # random weights do not answer "blue"
    assert len(res["runs"]) == 2
    assert "| native | sage_tiny_mc | acc |" in (out / "eval.md").read_text()
    assert "ours sage_tiny_mc: acc" in capsys.readouterr().out


def test_eval_results_join_the_comparison_report(tiny_model: Path, tiny_tasks: Path, tmp_path: Path) -> None:
    from sage_dialog.core.schema import Dialog, Turn
    from sage_dialog.sandbox.oracles import oracle_for
    from sage_dialog.stages.compare.compare import run_compare

    dialogs = {m: [Dialog(id=f"{m}{i}", turns=[Turn(role="user", text=f"seed {i}"), Turn(role="assistant", text=r)])
                   for i in range(3)] for m, r in (("a", "I hear you, that is hard."), ("b", "ok"))}
    out = tmp_path / "cmp"
    run_compare(dialogs, [oracle_for("pairwise")], out, n_boot=100, progress=False, title="A vs B")
    assert main(["eval", "--model", f"a=hf:{tiny_model}", "--include-path", str(tiny_tasks), "--tasks",
                 "sage_tiny_mc", "--limit", "2", "-o", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert md.startswith("# A vs B") and "## General-ability benchmarks" in md and "| a | sage_tiny_mc | acc |" in md
    assert "General-ability benchmarks" in (out / "report.html").read_text()
    assert not (out / "eval.md").exists()


def test_eval_errors(tmp_path: Path, tiny_tasks: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--model", "x", "--tasks", "t"]) == 2
    assert "NAME=SPEC" in capsys.readouterr().err
    assert main(["eval", "--model", "x=hf:/nowhere", "--tasks", "no_such_task", "--include-path", str(tiny_tasks),
                 "-o", str(tmp_path / "o")]) == 2
    assert "unknown task" in capsys.readouterr().err
    assert main(["eval", "--model", "x=hf:/nowhere", "--tasks", "t", "--include-path", str(tmp_path / "none")]) == 2
    assert "no such folder" in capsys.readouterr().err

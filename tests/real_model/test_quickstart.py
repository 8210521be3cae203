"""The real-model quickstart (configs/quickstart-smollm2.yaml) at minimal size on SmolLM2-135M:
every stage of `sage-dialog run`, from importing chitchat dialogs to the steerability report, on the
real model, real tokenizer and real text (a few dialogs, a few training steps)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sage_dialog.cli import main

CONFIG = Path(__file__).parents[2] / "configs" / "quickstart-smollm2.yaml"

# the smallest run that still goes through every stage (the README's command runs the file as is)
MINIMAL = [
    "import.limit=4", "import.max_turns=4",
    "sft.train.max_steps=3", "sft.train.batch_size=2",
    "search.max_seeds=1", "search.config.turns=1", "search.config.candidates=2",
    "search.config.sampling.max_tokens=48",
    "dpo.train.max_steps=2",
    "compare.max_seeds=1", "compare.turns=1", "compare.sampling.max_tokens=32", "compare.bootstrap=100",
    "steerability.contexts=1", "steerability.sampling.max_tokens=32",
    "benchmarks.limit=1",
]


@pytest.mark.slow
def test_quickstart_runs_every_stage_on_the_real_model(smollm2: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("chitchat_dataset")
    run_dir = tmp_path / "run"
    rc = main(["run", str(CONFIG), f"run_dir={run_dir}", *MINIMAL])
    out = capsys.readouterr().out
    assert rc == 0, out
    stages = ["import", "annotate", "chain", "mix", "sft", "search", "prefs", "dpo", "benchmarks", "compare",
              "steerability"]
    for s in stages:
        m = json.loads((run_dir / s / "manifest.json").read_text())
        assert m["finished"], s
    assert len((run_dir / "import" / "dialogs.jsonl").read_text().splitlines()) == 4
    # the trained models are plain folders any backend serves
    for s in ("sft", "dpo"):
        assert (run_dir / s / "model" / "config.json").is_file()
    compared = (run_dir / "compare").rglob("*.json")
    assert any("base" in p.read_text() and "DPO" in p.read_text() for p in compared)
    md = (run_dir / "compare" / "report.md").read_text()
    assert "## Emotional intelligence (EQ-Bench)" in md and all(f"| {m} |" in md for m in ("base", "M1", "DPO"))
    report = json.loads((run_dir / "steerability" / "report.json").read_text())
    assert report["judge"].startswith("annotator:") and report["actions"] == 3
    assert report["overall"]["n"] == 3
    # a second run changes nothing: every stage is skipped
    assert main(["run", str(CONFIG), f"run_dir={run_dir}", *MINIMAL]) == 0
    assert capsys.readouterr().out.count("unchanged, skipped") == len(stages)

"""`sage-dialog run` on the tiny model: every stage completes, a second run skips every stage, and a
changed value re-runs exactly the stages downstream of it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from sage_dialog.cli import main
from sage_dialog.core.io import write_jsonl
from sage_dialog.sandbox.corpus import CorpusConfig, generate_corpus

pytestmark = pytest.mark.slow

STAGES = ["annotate", "chain", "mix", "sft", "search-r1", "prefs-r1", "sft-r1", "search", "prefs", "dpo", "rl",
          "benchmarks", "compare"]


def _statuses(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    out = capsys.readouterr().out
    table = out[out.index("stage  "):].splitlines()[1:]
    return {line.split()[0]: line.split()[1] for line in table if line.strip()}


@pytest.fixture(scope="module")
def loop_config(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    root = tmp_path_factory.mktemp("loop")
    corpus = generate_corpus(CorpusConfig(n_dialogs=24, seed=3))
    write_jsonl(root / "raw.jsonl", [d.model_copy(update={"meta": {}}) for d in corpus])
    (root / "seeds.txt").write_text("\n".join(d.turns[0].text for d in corpus[:3]) + "\n", encoding="utf-8")
    train = {"max_steps": 3, "batch_size": 4, "logging_steps": 1, "learning_rate": 1e-3}
    cfg = {
        "run_dir": str(root / "run"),
        "base_model": str(tiny_model),
        "raw": [str(root / "raw.jsonl")],
        "annotate": {"annotator": "oracle"},
        "mix": {"valid_size": 4},
        "sft": {"adapter": {"method": "full"}, "data": {"max_length": 256}, "train": train},
        "rounds": 1,
        "search": {"seeds": str(root / "seeds.txt"), "user": "oracle", "judge": "oracle",
                   "config": {"turns": 2, "candidates": 2, "sampling": {"max_tokens": 24}}},
        "dpo": {"adapter": {"method": "lora", "r": 4, "alpha": 8}, "data": {"max_length": 256},
                "train": {**train, "max_steps": 2}},
        "rl": {"adapter": {"method": "lora", "r": 4, "alpha": 8, "target_modules": "all-linear"},
               "rollout": {"turns": 2, "max_tokens": 16},
               "train": {"steps": 1, "prompts_per_step": 2, "group_size": 2, "device": "cpu"},
               "gates": {"stall_steps": None}},
        "compare": {"user": "oracle", "judges": ["oracle"], "turns": 2, "bootstrap": 200,
                    "sampling": {"max_tokens": 24}},
        "benchmarks": {"tasks": ["eq_bench"], "limit": 2},
    }
    path = root / "loop.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def test_every_stage_then_skip_then_rerun_downstream(loop_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = loop_config.parent / "run"
    assert main(["run", str(loop_config)]) == 0
    out = capsys.readouterr().out
    table = {line.split()[0]: line for line in out[out.index("stage  "):].splitlines()[1:] if line.strip()}
    assert {k: v.split()[1] for k, v in table.items()} == dict.fromkeys(STAGES, "ran")
    # the stage table shows each stage's quality counts
    assert "dialogs=24" in table["annotate"] and "rejected=0" in table["annotate"]
    assert "decisions=" in table["search"] and "unparsed=0" in table["search"]
    assert "pairs=" in table["prefs"] and "dropped=" in table["prefs"]
    assert "train_examples=" in table["sft"] and "first_train_loss=" in table["sft"]
    assert "parsed=" in table["compare"] and "unparsed=0" in table["compare"] and "ties=" in table["compare"]
    for stage in STAGES:
        manifest = json.loads((run_dir / stage / "manifest.json").read_text())
        assert manifest["finished"] and manifest["inputs"]["fingerprint"]
    for stage in ("sft", "sft-r1", "dpo", "rl"):
        assert (run_dir / stage / "model" / "config.json").exists()
    assert "dialogs=4" in table["rl"] and "interactions=4" in table["rl"]
    assert (run_dir / "prefs" / "pairs.trl.jsonl").stat().st_size > 0
    assert (run_dir / "compare" / "report.html").exists()
    # EQ-Bench on the base model and every trained one, in the comparison's report
    assert "base eq_bench=" in table["benchmarks"] and "DPO eq_bench=" in table["benchmarks"]
    bench = json.loads((run_dir / "benchmarks" / "eval_results.json").read_text())["models"]
    assert list(bench) == ["base", "M1", "M2", "DPO", "RL"] and all("eqbench" in m["eq_bench"] for m in bench.values())
    md = (run_dir / "compare" / "report.md").read_text()
    assert "## Emotional intelligence (EQ-Bench)" in md and "| DPO |" in md and "first 2 questions" in md

    assert main(["run", str(loop_config)]) == 0
    assert _statuses(run_dir, capsys) == dict.fromkeys(STAGES, "skipped")

    # a prefs value reaches the prefs stages and everything trained or judged after them
    assert main(["run", str(loop_config), "prefs.negatives=1"]) == 0
    ran = {k for k, v in _statuses(run_dir, capsys).items() if v == "ran"}
    assert ran == {"prefs-r1", "sft-r1", "search", "prefs", "dpo", "rl", "benchmarks", "compare"}

    assert main(["run", str(loop_config), "prefs.negatives=1", "compare.turns=1"]) == 0
    ran = {k for k, v in _statuses(run_dir, capsys).items() if v == "ran"}
    assert ran == {"compare"}

    # a judge that always picks the dialog shown first is noise: gates.min_judge_consistency stops the loop
    first = loop_config.parent / "first.json"
    first.write_text(json.dumps(["Dialog A is better"]))
    argv = ["run", str(loop_config), "prefs.negatives=1", "compare.turns=1", f"compare.judges=[mock:{first}]"]
    assert main([*argv, "gates.min_judge_consistency=0.5"]) == 2
    err = capsys.readouterr().err
    assert f"stage compare: judge consistent 0 of 18 (0%) is below gates.min_judge_consistency=0.5 (50%); judge " \
           f"pairwise:mock:{first}: consistent 0 of 18 pairs in both orders, flipped 18, picked the first shown 100%" in err
    assert "no better than its position prior" in (run_dir / "compare" / "report.md").read_text()
    assert main(argv) == 0  # the gate is off by default


def test_list_and_bad_config(loop_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(loop_config), "--list"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == STAGES
    assert main(["run", str(loop_config), "nonsense=1"]) == 2
    assert "nonsense" in capsys.readouterr().err
    assert main(["run", str(loop_config), "--from", "nope"]) == 2

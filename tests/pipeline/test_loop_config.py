"""Loop configs: shipped ones validate, typos stop before any stage, training under a launcher."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sage_dialog.cli import main
from sage_dialog.core.config import load_config
from sage_dialog.core.errors import UserError
from sage_dialog.core.io import write_jsonl
from sage_dialog.pipeline.loop_config import LoopConfig
from sage_dialog.pipeline.sage_loop import _launch, build_stages
from sage_dialog.train.config import SFTRunConfig

CONFIGS = Path(__file__).parents[2] / "configs"


def test_the_original_runs_config_builds_every_stage() -> None:
    cfg = load_config(LoopConfig, CONFIGS / "sage-original.yaml")
    assert [s.name for s in build_stages(cfg)] == [
        "annotate", "chain", "mix", "sft", "search-r1", "prefs-r1", "sft-r1", "search", "prefs", "dpo", "compare"]
    assert cfg.launcher and cfg.launcher[:2] == ["accelerate", "launch"]
    assert cfg.search.config.candidates == 4 and cfg.search.config.turns == 8


def test_the_real_model_quickstart_builds_every_stage() -> None:
    cfg = load_config(LoopConfig, CONFIGS / "quickstart-smollm2.yaml")
    stages = build_stages(cfg)
    assert [s.name for s in stages] == [
        "import", "annotate", "chain", "mix", "sft", "search", "prefs", "dpo", "benchmarks", "compare",
        "steerability"]
    by = {s.name: s for s in stages}
    # EQ-Bench on base, SFT and DPO before the comparison that shows its table
    assert cfg.benchmarks is not None and cfg.benchmarks.tasks == ["eq_bench"] and cfg.benchmarks.base
    assert {"sft", "dpo"} <= set(by["benchmarks"].deps) and "benchmarks" in by["compare"].deps
    assert "import" in by["annotate"].deps and "import" in by["search"].deps  # seeds come from the import
    assert cfg.import_ is not None and cfg.import_.corpus == "chitchat" and cfg.compare_base
    # the overrides the CI tier uses reach the sections
    small = load_config(LoopConfig, CONFIGS / "quickstart-smollm2.yaml", ["import.limit=3", "search.max_seeds=2"])
    assert small.import_ is not None and small.import_.limit == 3 and small.search.max_seeds == 2


def test_a_loop_without_dialogs_or_seeds_is_a_user_error() -> None:
    cfg = load_config(LoopConfig, CONFIGS / "quickstart-smollm2.yaml")
    with pytest.raises(UserError, match="raw dialog files, an import section"):
        build_stages(cfg.model_copy(update={"import_": None}))


def test_a_typo_in_a_stage_section_names_the_section_and_field(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    # the sections are the stages' typed settings: a typo stops the run when the config is read
    with pytest.raises(UserError, match=r"sage-original\.yaml: field dpo\.dpo\.betta: Extra inputs"):
        load_config(LoopConfig, CONFIGS / "sage-original.yaml", ["dpo.dpo.betta=0.2", f"run_dir={tmp_path}/r"])
    assert main(["run", str(CONFIGS / "sage-original.yaml"), "mix.blnd=2", f"run_dir={tmp_path}/r"]) == 2
    assert "field mix.blnd" in capsys.readouterr().err
    assert main(["run", str(CONFIGS / "sage-original.yaml"), "search.config.turnz=3", f"run_dir={tmp_path}/r"]) == 2
    assert "field search.config.turnz" in capsys.readouterr().err  # the file, then the dotted field
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_training_under_a_launcher_runs_in_its_own_process(tmp_path: Path, tiny_model: Path) -> None:
    rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there"}]}] * 8
    write_jsonl(tmp_path / "train.jsonl", rows)
    rcfg = SFTRunConfig.model_validate({
        "model": {"name_or_path": str(tiny_model)}, "adapter": {"method": "full"},
        "data": {"train": str(tmp_path / "train.jsonl"), "max_length": 64},
        "train": {"max_steps": 2, "batch_size": 4}, "output_dir": str(tmp_path / "out")})
    out = _launch(["python"], "sft", rcfg, tmp_path)
    assert (out / "config.json").exists()
    assert json.loads((out / "training_summary.json").read_text())["steps"] == 2
    assert (tmp_path / "sft.yaml").exists()


def test_the_loop_backend_options_reach_an_annotator_on_the_loop_provider() -> None:
    """The quickstart's dtype: fast reaches the annotator (hf:), so it shares the run's one base."""
    cfg = load_config(LoopConfig, CONFIGS / "quickstart-smollm2.yaml")
    assert cfg.backend_options == {"dtype": "fast"}
    assert cfg.annotate_settings().backend_options == {"dtype": "fast"}
    own = load_config(LoopConfig, CONFIGS / "quickstart-smollm2.yaml", ["annotate.backend_options.dtype=float32"])
    assert own.annotate_settings().backend_options == {"dtype": "float32"}  # the section's own wins
    other = cfg.model_copy(update={"annotate": cfg.annotate.model_copy(update={"annotator": "mock:"})})
    assert other.annotate_settings().backend_options == {}  # not the loop's provider: not its options

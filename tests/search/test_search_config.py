"""One search config: `sage-dialog search`, the loop (`run`, and so the demo) and the stage API build
the same SearchRunConfig with the same defaults, and one config gives identical trees through all three."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from sage_dialog.cli import main
from sage_dialog.commands import search as search_cmd
from sage_dialog.core.config import load_config
from sage_dialog.pipeline.loop_config import LoopConfig
from sage_dialog.pipeline.sage_loop import search_config
from sage_dialog.roles.sampling import SamplingConfig
from sage_dialog.stages.search import stage
from sage_dialog.stages.search.config import SearchConfig

SEEDS = ["I failed my driving test again.", "My sister is getting married!"]
REPO = Path(__file__).resolve().parents[2]


def _args(*flags: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    search_cmd.add_arguments(p)
    return p.parse_args(list(flags))


def _loop(tmp: Path, search: dict) -> LoopConfig:
    return LoopConfig.model_validate({"run_dir": tmp / "run", "base_model": "m", "raw": [tmp / "raw.jsonl"],
                                      "search": search})


def test_the_command_and_the_loop_share_every_default(tmp_path: Path) -> None:
    seeds = tmp_path / "seeds.txt"
    cmd = search_cmd.config_from_args(_args(str(seeds), "-o", str(tmp_path / "o"), "--assistant", "hf:m"))
    loop = search_config(_loop(tmp_path, {"seeds": str(seeds)}), Path("m"), tmp_path / "o", seeds)
    assert isinstance(cmd, stage.SearchRunConfig)
    # the loop fills only its run's cache and its models' backend options
    assert loop.model_copy(update={"cache": None, "backend_options": {}}) == cmd
    assert cmd.user == cmd.judge == "assistant" and cmd.assistant_persona == "persona_assistant"
    assert cmd.strategy().system_prompt  # the original's persona by default, everywhere
    humor = search_cmd.config_from_args(_args(str(seeds), "-o", "o", "--assistant", "hf:m", "--humor"))
    assert isinstance(humor, stage.SearchRunConfig)
    assert humor.judge_criteria() == "humor" and humor.persona_name() == "persona_assistant_humor"
    loop_humor = search_config(_loop(tmp_path, {"seeds": str(seeds), "humor": True}), Path("m"), tmp_path, seeds)
    assert loop_humor.judge_criteria() == "humor" and loop_humor.strategy() == humor.strategy()


def test_the_demo_config_searches_through_the_loop(tmp_path: Path) -> None:
    cfg = load_config(LoopConfig, REPO / "configs" / "demo-sandbox.yaml", [f"run_dir={tmp_path}"])
    s = search_config(cfg, tmp_path / "m", tmp_path / "o", tmp_path / "seeds.txt")
    assert s.user == s.judge == "oracle" and s.strategy().system_prompt is None
    assert s.config.turns == 3 and s.config.max_resamples == 0 and s.cache == str(tmp_path / "cache.sqlite")


def _trees(out: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((out / "trees").glob("seed-*.jsonl"))}


@pytest.mark.slow
def test_one_config_gives_identical_trees_through_command_loop_and_api(tmp_path: Path, tiny_model: Path) -> None:
    seeds = tmp_path / "seeds.txt"
    seeds.write_text("\n".join(SEEDS) + "\n")
    # 1. the stage API
    cfg = stage.SearchRunConfig(seeds=seeds, out=tmp_path / "api", assistant=f"hf:{tiny_model}", user="oracle",
                                judge="oracle", assistant_persona="none",
                                config=SearchConfig(turns=2, candidates=2, sampling=SamplingConfig(max_tokens=8)))
    res = stage.run(cfg)
    assert res.seeds == 2 and res.nodes > 0 and res.trees.is_dir()
    # 2. the command, with the same values as flags
    assert main(["search", str(seeds), "-o", str(tmp_path / "cmd"), "--assistant", f"hf:{tiny_model}",
                 "--user", "oracle", "--judge", "oracle", "--assistant-persona", "none", "--turns", "2",
                 "--candidates", "2", "--max-tokens", "8", "--no-progress"]) == 0
    # 3. the loop (and so the demo): its search section, the model of the round filled in
    loop = _loop(tmp_path, {"seeds": str(seeds), "user": "oracle", "judge": "oracle", "assistant_persona": "none",
                            "config": {"turns": 2, "candidates": 2, "sampling": {"max_tokens": 8}}})
    stage.run(search_config(loop, tiny_model, tmp_path / "loop", seeds))
    api = _trees(tmp_path / "api")
    assert len(api) == 2
    assert _trees(tmp_path / "cmd") == api
    assert _trees(tmp_path / "loop") == api

"""The rl stage end to end on the tiny model: rollouts, rewards, GRPO steps, checkpoints, resume, gates."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sage_dialog.core.errors import UserError
from sage_dialog.stages import rl
from sage_dialog.stages.base import STAGE_MODULES
from sage_dialog.train.config import AdapterSection, ModelSection

OPENINGS = ["I feel sad about my exam.", "I'm nervous about the job.", "My boss makes me so angry.",
            "I feel hopeful about my sister."]


@pytest.fixture
def seeds(tmp_path: Path) -> Path:
    p = tmp_path / "seeds.txt"
    p.write_text("\n".join(OPENINGS) + "\n", encoding="utf-8")
    return p


def settings(**kw: object) -> rl.Settings:
    base = {"adapter": AdapterSection(method="full").model_dump(), "threads": 1,
            "rollout": {"turns": 2, "max_tokens": 40, "user": "oracle"},
            "train": {"steps": 2, "prompts_per_step": 2, "group_size": 2, "learning_rate": 1e-2, "save_steps": 1,
                      "device": "cpu"},
            "gates": {"stall_steps": None}}
    for k, v in kw.items():
        base[k] = {**base[k], **v} if isinstance(v, dict) and isinstance(base.get(k), dict) else v  # type: ignore[dict-item]
    return rl.Settings.model_validate(base)


def weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


@pytest.mark.parametrize("credit", ["token", "state"])
def test_rl_trains_and_journals_every_dialog(sandbox_policy: Path, seeds: Path, tmp_path: Path, credit: str) -> None:
    out = tmp_path / "rl"
    res = rl.run(settings(credit=credit), inputs=rl.Inputs(model=ModelSection(name_or_path=str(sandbox_policy)),
                                                           seeds=seeds), out=out)
    assert res.counts["steps"] == 2
    assert res.counts["dialogs"] == 8 and res.counts["interactions"] == 8  # 2 steps x 4 dialogs x 1 user turn
    rows = [json.loads(line) for line in (out / "rollouts.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and {r["meta"]["step"] for r in rows} == {1, 2}
    assert all(len(r["meta"]["turn_rewards"]) == 2 for r in rows)
    assert all(r["meta"]["reward"] == pytest.approx(sum(r["meta"]["turn_rewards"])) for r in rows)
    before, after = weights(sandbox_policy), weights(out)
    assert any(not (before[k] == after[k]).all() for k in before)  # the policy moved
    assert (out / "chat_template.jinja").exists() and (out / "manifest.json").exists()
    summary = json.loads((out / "rl_summary.json").read_text())
    assert summary["steps"] == 2 and summary["log_history"]
    # the rollouts as search trees: each group's first replies are siblings under its opening
    from sage_dialog.formats.trees import check_trees
    from sage_dialog.stages import prefs

    problems, n_trees = check_trees(out / "trees")
    assert problems == [] and n_trees == 4  # 2 steps x 2 groups
    counts = prefs.run(prefs.Settings(), inputs=prefs.Inputs(source=out / "trees"), out=tmp_path / "prefs").counts
    distinct = sum(1 for g in range(0, 8, 2) if rows[g]["meta"]["reward"] != rows[g + 1]["meta"]["reward"])
    assert counts["pairs"] + counts.get("dropped", 0) >= distinct  # a pair per group whose dialogs differ


def test_resume_continues_from_the_last_checkpoint(tiny_model: Path, seeds: Path, tmp_path: Path) -> None:
    out = tmp_path / "rl"
    inputs = rl.Inputs(model=ModelSection(name_or_path=str(tiny_model)), seeds=seeds)
    rl.run(settings(), inputs=inputs, out=out)
    assert (out / "checkpoint-2").is_dir()
    res = rl.run(settings(train={"steps": 3, "resume": True}), inputs=inputs, out=out)
    assert res.counts["steps"] == 3 and res.counts["dialogs"] == 4  # one more step, played once
    rows = [json.loads(line)["meta"]["step"] for line in (out / "rollouts.jsonl").read_text().splitlines()]
    assert sorted(rows) == [1] * 4 + [2] * 4 + [3] * 4


def test_stall_gate_stops_a_run_with_nothing_to_learn(tiny_model: Path, seeds: Path, tmp_path: Path) -> None:
    # one near-greedy reply per dialog: the two dialogs of a group are the same, so are their rewards
    s = settings(rollout={"turns": 1, "temperature": 1e-4}, gates={"stall_steps": 1})
    with pytest.raises(UserError, match="identical for 1 steps"):
        rl.run(s, inputs=rl.Inputs(model=ModelSection(name_or_path=str(tiny_model)), seeds=seeds),
               out=tmp_path / "rl")


def test_ground_truth_needs_an_oracle(tiny_model: Path, seeds: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="is not an oracle spec"):
        rl.run(settings(reward={"oracle": "hf:x"}), inputs=rl.Inputs(model=ModelSection(name_or_path=str(tiny_model)),
                                                                      seeds=seeds), out=tmp_path / "rl")


def test_train_rl_command(tiny_model: Path, seeds: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "sage_dialog", "train", "rl", "--model", str(tiny_model), "--seeds", str(seeds),
           "-o", str(out), "--max-steps", "1", "adapter.method=full", "rollout.turns=2", "rollout.max_tokens=40",
           "train.prompts_per_step=2", "train.group_size=2", "train.device=cpu", "threads=1", "gates.stall_steps=null",
           "credit=turn", "rollout.user=oracle:long_horizon", "reward.oracle=oracle:long_horizon"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "rl: 1 steps, 4 dialogs, 4 user turns" in done.stdout
    bad = subprocess.run([*cmd[:-3], "credit=tokens"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "credit" in bad.stderr


def test_rl_has_the_one_stage_shape() -> None:
    assert STAGE_MODULES["rl"] == "sage_dialog.stages.rl"


def test_kill_9_mid_run_then_resume_loses_and_repeats_nothing(sandbox_policy: Path, seeds: Path, tmp_path: Path) -> None:
    import os
    import signal
    import time

    out = tmp_path / "rl"
    cmd = [sys.executable, "-m", "sage_dialog", "train", "rl", "--model", str(sandbox_policy), "--seeds", str(seeds),
           "-o", str(out), "--max-steps", "4", "adapter.method=full", "rollout.turns=2", "rollout.max_tokens=40",
           "train.prompts_per_step=2", "train.group_size=2", "train.save_steps=1", "train.device=cpu", "threads=1",
           "gates.stall_steps=null"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 400
    while not (out / "checkpoint-2" / "trainer_state.json").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before its second checkpoint"
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-2000:]
    steps = sorted(json.loads(line)["meta"]["step"] for line in (out / "rollouts.jsonl").read_text().splitlines())
    assert steps == [1] * 4 + [2] * 4 + [3] * 4 + [4] * 4  # each step's dialogs once: none lost, none twice
    assert json.loads((out / "rl_summary.json").read_text())["steps"] == 4


def test_pairwise_judge_reward_against_the_starting_policy(sandbox_policy: Path, seeds: Path, tmp_path: Path) -> None:
    out = tmp_path / "rl"
    s = settings(reward={"source": "judge", "judge": "oracle"}, train={"steps": 1})
    res = rl.run(s, inputs=rl.Inputs(model=ModelSection(name_or_path=str(sandbox_policy)), seeds=seeds), out=out)
    assert res.counts["judge_calls"] == 8  # 4 dialogs, each judged against its reference in both orders
    rows = [json.loads(line)["meta"] for line in (out / "rollouts.jsonl").read_text().splitlines()]
    # the verdict lands on the last turn: win 1, tie 0.5, loss 0 averaged over the two orders
    assert all(r["turn_rewards"][0] == 0.0 and r["turn_rewards"][1] in (0.0, 0.25, 0.5, 0.75, 1.0) for r in rows)

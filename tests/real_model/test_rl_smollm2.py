"""State-level RL on the real SmolLM2-135M: two GRPO steps with its own ChatML template (system role),
rollouts against the sandbox's oracle user, the ground-truth reward, a gradient step on a LoRA
adapter, and the adapter saved and loaded by `sage-dialog chat`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sage_dialog.stages import rl
from sage_dialog.train.config import ModelSection

pytestmark = pytest.mark.slow


def test_two_rl_steps_on_smollm2_and_chat_loads_the_adapter(smollm2: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from sage_dialog.sandbox import world

    seeds = tmp_path / "seeds.txt"
    seeds.write_text("\n".join(world.seed_openings(4, 3)) + "\n", encoding="utf-8")
    settings = rl.Settings.model_validate({
        "credit": "state", "loss_on": "action+reply",
        "adapter": {"method": "lora", "r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
        "rollout": {"turns": 2, "max_tokens": 24, "system_prompt": "You are a caring friend. Reply in one sentence."},
        "train": {"steps": 2, "prompts_per_step": 2, "group_size": 2, "learning_rate": 1e-3, "save_steps": 1,
                  "device": "cpu"},
        "gates": {"stall_steps": None}})
    out = tmp_path / "rl"
    res = rl.run(settings, inputs=rl.Inputs(model=ModelSection(name_or_path="smollm2-135m"), seeds=seeds), out=out)
    assert res.counts["steps"] == 2 and res.counts["dialogs"] == 8 and res.counts["interactions"] == 8
    rows = [json.loads(line) for line in (out / "rollouts.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and all(r["turns"][1]["text"].strip() for r in rows)  # real replies were played
    adapter = load_file(str(out / "adapter_model.safetensors"))
    assert adapter and all(v.isfinite().all() for v in adapter.values())
    assert (out / "adapter_config.json").exists() and (out / "chat_template.jinja").exists()
    chat = subprocess.run([sys.executable, "-m", "sage_dialog", "chat", "--model", "hf:smollm2-135m", "--adapter",
                           str(out), "--max-tokens", "16", "--seed", "0", "--no-stream"],
                          input="I feel sad about my exam.\n/quit\n", capture_output=True, text=True, timeout=600)
    assert chat.returncode == 0, chat.stderr[-2000:]
    assert len(chat.stdout.strip()) > 0

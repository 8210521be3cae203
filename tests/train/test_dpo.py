"""DPO with the SFT term on the tiny model (LoRA and full): losses finite and falling, weights move."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from sage_dialog.core.config import load_config
from sage_dialog.core.errors import UserError
from sage_dialog.train.config import DPORunConfig
from sage_dialog.train.dpo import loss_spec, train_dpo


def _cfg(tiny_model, data, out, fast, **kw):
    return load_config(DPORunConfig, None, fast(tiny_model, data, out, **kw))


def test_loss_spec_adds_the_sft_term(tiny_model, dpo_data, tmp_path, fast):
    cfg = _cfg(tiny_model, dpo_data, tmp_path, fast)
    assert loss_spec(cfg) == (["sigmoid", "sft"], [1.0, 1.0])  # the original's dpo_ftx 1.0
    cfg = _cfg(tiny_model, dpo_data, tmp_path, fast, **{"dpo.sft_weight": 0, "dpo.loss_type": "[ipo, hinge]"})
    assert loss_spec(cfg) == (["ipo", "hinge"], [1.0, 1.0])
    cfg = _cfg(tiny_model, dpo_data, tmp_path, fast, **{"dpo.loss_type": "[nonsense]"})
    with pytest.raises(UserError, match=r"dpo\.loss_type: unknown"):
        loss_spec(cfg)
    with pytest.raises(UserError, match="lists 'sft'"):
        _cfg(tiny_model, dpo_data, tmp_path, fast, **{"dpo.loss_type": "[sigmoid, sft]"})


def _history(out):
    s = json.loads((out / "training_summary.json").read_text())
    return s, [h for h in s["log_history"] if "loss" in h]


def test_lora_dpo_prefers_chosen_and_keeps_the_sft_term(tiny_model, dpo_data, tmp_path, fast):
    out = tmp_path / "dpo-lora"
    train_dpo(_cfg(tiny_model, dpo_data, out, fast,
                   **{"train.max_steps": 10, "train.learning_rate": 5e-3, "data.eval_fraction": 0.2}))
    s, logs = _history(out)
    assert s["stage"] == "dpo" and s["steps"] == 10 and s["eval_examples"] == 5
    assert all(math.isfinite(h["loss"]) for h in logs)
    assert s["final_train_loss"] < s["first_train_loss"]
    # with the SFT term the loss is DPO (log 2 at the start) + chosen NLL (~log vocab), far above log 2
    assert s["first_train_loss"] > 3.0
    assert logs[-1]["rewards/margins"] > 0 and logs[-1]["rewards/accuracies"] > 0.5
    assert s["final_eval_loss"] is not None
    adapter = load_file(str(out / "adapter_model.safetensors"))
    assert any(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k)
    assert (out / "chat_template.jinja").exists()


def test_full_dpo_changes_weights_and_loss_falls(tiny_model, dpo_data, tmp_path, fast):
    out = tmp_path / "dpo-full"
    train_dpo(_cfg(tiny_model, dpo_data, out, fast,
                   **{"adapter.method": "full", "train.max_steps": 10, "train.learning_rate": 1e-3,
                      "dpo.sft_weight": 0.5, "dpo.beta": 0.2}))
    s, logs = _history(out)
    assert s["method"] == "full" and s["trainable_params"] == s["total_params"]
    assert all(math.isfinite(h["loss"]) for h in logs)
    assert s["final_train_loss"] < s["first_train_loss"]
    assert logs[-1]["rewards/margins"] > 0
    before, after = load_file(str(tiny_model / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert sum(not torch.equal(before[k], after[k]) for k in before) > len(before) // 2

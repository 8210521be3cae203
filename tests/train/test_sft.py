"""SFT on the tiny model (full and LoRA): parameters change, losses finite and falling, resume, export."""

from __future__ import annotations

import json
import math

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from sage_dialog.core.config import load_config
from sage_dialog.train.config import SFTRunConfig
from sage_dialog.train.export import export_model
from sage_dialog.train.sft import train_sft
from sage_dialog.train.templates import CHATML


def _weights(path):
    return load_file(str(path / "model.safetensors"))


def _summary(out):
    return json.loads((out / "training_summary.json").read_text())


def test_full_sft_learns_the_toy_set(tiny_model, sft_data, tmp_path, fast):
    out = tmp_path / "full"
    cfg = load_config(SFTRunConfig, None, fast(
        tiny_model, sft_data, out, **{"adapter.method": "full", "train.max_steps": 24,
                                      "train.learning_rate": 2e-3, "data.eval_fraction": 0.2}))
    assert train_sft(cfg) == out
    s = _summary(out)
    assert s["steps"] == 24 and s["method"] == "full" and s["device"] == "cpu"
    assert s["train_examples"] + s["eval_examples"] == 24 and s["eval_examples"] == 5
    losses = [h["loss"] for h in s["log_history"] if "loss" in h]
    assert all(math.isfinite(x) for x in losses) and len(losses) >= 10
    assert s["final_train_loss"] < 0.6 * s["first_train_loss"]
    assert s["final_eval_loss"] is not None and s["final_eval_loss"] < 0.6 * s["first_train_loss"]
    assert s["tokens"] > 0 and s["tokens_per_s"] > 0 and s["wall_time_s"] > 0
    before, after = _weights(tiny_model), _weights(out)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) > len(before) // 2
    # the training template is saved with the model and used by the tokenizer at inference
    assert (out / "chat_template.jinja").read_text() == CHATML
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template == CHATML
    assert (out / "manifest.json").exists() and (out / "train_config.json").exists()
    # the model learned the mapping: greedy answer to a training prompt starts with the tag block
    model = AutoModelForCausalLM.from_pretrained(out)
    ids = tok.apply_chat_template([{"role": "user", "content": "I feel sad about my exam."}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    gen = model.generate(**ids, max_new_tokens=12, do_sample=False)
    assert tok.decode(gen[0, ids["input_ids"].shape[1]:]).startswith("{u_motivation: venting")


def test_lora_sft_then_export_loads_and_generates(tiny_model, sft_data, tmp_path, fast):
    out = tmp_path / "lora"
    cfg = load_config(SFTRunConfig, None, fast(
        tiny_model, sft_data, out, **{"train.max_steps": 12, "train.learning_rate": 5e-3,
                                      "adapter.r": 8, "data.loss_on": "reply"}))
    train_sft(cfg)
    s = _summary(out)
    assert s["trainable_params"] < s["total_params"] / 10
    assert s["final_train_loss"] < s["first_train_loss"]
    adapter = load_file(str(out / "adapter_model.safetensors"))
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b)  # B starts at zero: it moved
    assert {k.split(".")[-3] for k in adapter if "lora_A" in k} == {"q_proj", "v_proj"}
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_model)

    merged = export_model(out, tmp_path / "merged")
    assert (merged / "config.json").exists() and not (merged / "adapter_config.json").exists()
    assert (merged / "chat_template.jinja").read_text() == CHATML
    model = AutoModelForCausalLM.from_pretrained(merged)
    tok = AutoTokenizer.from_pretrained(merged)
    # merged weights differ from the base exactly where LoRA was applied
    base, new = _weights(tiny_model), _weights(merged)
    diff = {k for k in base if not torch.allclose(base[k], new[k])}
    assert diff and all("q_proj" in k or "v_proj" in k for k in diff)
    # same logits as base + adapter through PEFT
    from peft import PeftModel

    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), str(out))
    x = tok("I feel sad about my exam.", return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(peft_model(**x).logits, model(**x).logits, atol=1e-4)
    ids = tok.apply_chat_template([{"role": "user", "content": "hello"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    gen = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert gen.shape[1] > ids["input_ids"].shape[1]


def test_resume_continues_from_the_last_checkpoint(tiny_model, sft_data, tmp_path, fast):
    out = tmp_path / "resume"
    common = {"adapter.method": "full", "train.learning_rate": 1e-3, "train.save_steps": 3}
    train_sft(load_config(SFTRunConfig, None, fast(tiny_model, sft_data, out,
                                                             **common, **{"train.max_steps": 3})))
    assert (out / "checkpoint-3" / "trainer_state.json").exists()
    first = _summary(out)
    train_sft(load_config(SFTRunConfig, None, fast(
        tiny_model, sft_data, out, **common, **{"train.max_steps": 6, "train.resume": True})))
    s = _summary(out)
    assert s["resumed_from"].endswith("checkpoint-3") and s["steps"] == 6
    # only the 3 new steps ran in this session, and the log keeps the first session's losses
    logged_steps = [h["step"] for h in s["log_history"] if "loss" in h]
    assert logged_steps[0] <= 2 and logged_steps[-1] == 6
    assert 0 < s["tokens"] < 2 * first["tokens"] + 1
    assert (out / "checkpoint-6").exists()


def test_fast_lora_on_a_bf16_cpu_trains_fp32_adapters_on_a_bf16_base(tiny_model, sft_data, tmp_path, fast,
                                                                       monkeypatch):
    """precision=fast with LoRA: the frozen base loads in bf16 (no autocast), the adapter learns in fp32."""
    from sage_dialog.core import cpu
    from sage_dialog.train import common

    monkeypatch.setattr(cpu, "native_bf16", lambda: True)
    seen = {}
    original = common.load_model

    def spy(*args, **kwargs):
        model = original(*args, **kwargs)
        seen["dtype"] = next(model.parameters()).dtype
        return model

    monkeypatch.setattr("sage_dialog.train.sft.load_model", spy)
    out = tmp_path / "fast"
    cfg = load_config(SFTRunConfig, None, fast(
        tiny_model, sft_data, out, **{"train.max_steps": 12, "train.learning_rate": 5e-3, "adapter.r": 8,
                                      "train.precision": "fast"}))
    train_sft(cfg)
    assert seen["dtype"] == torch.bfloat16
    assert common.precision_args(cfg.train, "cpu", "lora")["bf16"] is False  # no autocast over a bf16 base
    assert common.precision_args(cfg.train, "cpu", "full")["bf16"] is True  # full FT: autocast, fp32 master
    s = _summary(out)
    assert all(math.isfinite(h["loss"]) for h in s["log_history"] if "loss" in h)
    assert s["final_train_loss"] < s["first_train_loss"]
    adapter = load_file(str(out / "adapter_model.safetensors"))
    assert {v.dtype for v in adapter.values()} == {torch.float32}
    assert any(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k)

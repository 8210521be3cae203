"""The train/export commands, shipped configs, and MoE leaf-module detection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sage_dialog import cli
from sage_dialog.core.config import load_config
from sage_dialog.train.config import DPORunConfig, SFTRunConfig
from sage_dialog.train.moe import find_moe_block_classes

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("train-*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_validate_and_name_their_command(path):
    text = path.read_text()
    first = text.splitlines()[0]
    assert first.startswith("# sage-dialog train") or first.startswith("# accelerate launch"), first
    model = DPORunConfig if "dpo" in path.name else SFTRunConfig
    cfg = load_config(model, path)
    assert cfg.output_dir


def test_original_configs_reproduce_the_paper_settings():
    sft = load_config(SFTRunConfig, ROOT / "configs/train-sft-mixtral-8x7b.yaml")
    assert sft.model.name_or_path == "mistralai/Mixtral-8x7B-Instruct-v0.1"
    assert sft.adapter.method == "lora" and sft.adapter.target_modules == ["q_proj", "v_proj"]
    assert (sft.train.learning_rate, sft.train.epochs, sft.data.max_length) == (5e-5, 3, 2048)
    dpo = load_config(DPORunConfig, ROOT / "configs/train-dpo-mixtral-8x7b.yaml")
    assert (dpo.train.learning_rate, dpo.train.epochs, dpo.data.max_length, dpo.dpo.sft_weight) == (1e-5, 3, 4096, 1.0)


def test_accelerate_configs_are_shipped():
    acc = ROOT / "src/sage_dialog/train/accelerate"
    import yaml

    z3 = yaml.safe_load((acc / "deepspeed_zero3_offload.yaml").read_text())
    assert z3["distributed_type"] == "DEEPSPEED"
    assert z3["deepspeed_config"]["zero_stage"] == 3
    assert z3["deepspeed_config"]["offload_param_device"] == "cpu"
    assert z3["deepspeed_config"]["offload_optimizer_device"] == "cpu"
    fsdp = yaml.safe_load((acc / "fsdp.yaml").read_text())
    assert fsdp["distributed_type"] == "FSDP"


def test_cli_trains_with_flags_and_overrides_then_exports(tiny_model, sft_data, tmp_path, capsys):
    out = tmp_path / "cli-out"
    rc = cli.main(["train", "sft", "--model", str(tiny_model), "--data", str(sft_data), "-o", str(out),
                   "--max-steps", "2", "train.batch_size=4", "adapter.r=4", "train.save_steps=1000",
                   "data.packing=true", "data.max_length=256",
                   "train.report_to=[tensorboard]"])  # not installed here: skipped with a warning
    assert rc == 0
    s = json.loads((out / "training_summary.json").read_text())
    assert s["steps"] == 2
    # packed: 4 rows of up to 256 tokens per step, far more than 4 unpacked toy dialogs (~60 tokens each)
    assert s["tokens"] > 2 * 4 * 100
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 4
    merged = tmp_path / "merged"
    rc = cli.main(["export", str(out), "-o", str(merged)])
    assert rc == 0 and (merged / "model.safetensors").exists()
    # exported again: its own folder is replaced file by file; a file you put there stays
    (merged / "notes.txt").write_text("mine")
    (merged / "model.safetensors").write_bytes(b"stale")
    capsys.readouterr()
    assert cli.main(["export", str(out), "-o", str(merged)]) == 0
    assert (merged / "notes.txt").read_text() == "mine" and (merged / "model.safetensors").stat().st_size > 5
    # a folder it did not make: refused, then with --force only its files are written
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "thesis.txt").write_text("years of work")
    capsys.readouterr()
    assert cli.main(["export", str(out), "-o", str(docs)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {docs}: folder exists and was not written by sage-dialog")
    assert sorted(p.name for p in docs.iterdir()) == ["thesis.txt"]
    assert cli.main(["export", str(out), "-o", str(docs), "--force"]) == 0
    assert (docs / "thesis.txt").read_text() == "years of work" and (docs / "model.safetensors").exists()


@pytest.mark.parametrize(("argv", "msg"), [
    (["train", "sft", "{cfg}", "adapter.bogus=1"], "adapter.bogus: Extra inputs are not permitted"),
    (["train", "sft", "{cfg}", "--data", "{tmp}/missing.jsonl"], "missing.jsonl: no such file"),
    (["train", "sft", "{cfg}", "adapter.target_modules=[nope]"], "adapter.target_modules: ['nope'] not in the model"),
    (["train", "sft", "{cfg}", "--method", "qlora"], "adapter.method=qlora needs a CUDA GPU"),
    (["train", "dpo", "{cfg}"], "expected prompt/chosen/rejected"),
    (["export", "{tmp}", "-o", "{tmp}_x"], "neither a LoRA adapter"),
])
def test_bad_input_exits_2_with_one_line(tiny_model, sft_data, tmp_path, capsys, argv, msg):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model: {{name_or_path: {tiny_model}}}\ndata: {{train: {sft_data}}}\noutput_dir: {tmp_path}/o\n")
    argv = [a.format(cfg=cfg, tmp=tmp_path) for a in argv]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err
    assert not (tmp_path / "o" / "training_summary.json").exists()


def test_help_has_an_example(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    assert "Example:" in capsys.readouterr().out


def test_moe_blocks_are_found_by_class_name():
    from transformers import LlamaConfig, LlamaForCausalLM, MixtralConfig, MixtralForCausalLM

    moe = MixtralForCausalLM(MixtralConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                           num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                           num_local_experts=4, num_experts_per_tok=2))
    assert [c.__name__ for c in find_moe_block_classes(moe)] == ["MixtralSparseMoeBlock"]
    dense = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=4))
    assert find_moe_block_classes(dense) == []


def test_zero3_leaf_registration_is_a_no_op_without_zero3():
    from transformers import MixtralConfig, MixtralForCausalLM

    from sage_dialog.train.moe import set_zero3_leaf_modules

    moe = MixtralForCausalLM(MixtralConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                           num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                                           num_local_experts=2, num_experts_per_tok=1))
    assert set_zero3_leaf_modules(moe) == []


def test_train_shows_one_progress_line_and_logs_the_details(tiny_model, sft_data, tmp_path, capfd):
    out = tmp_path / "calm"
    rc = cli.main(["train", "sft", "--model", str(tiny_model), "--data", str(sft_data), "-o", str(out),
                   "--max-steps", "4", "train.logging_steps=1", "train.save_steps=1000", "--threads", "1"])
    assert rc == 0
    cap = capfd.readouterr()
    screen = cap.out + cap.err
    lines = [ln for ln in screen.replace("\r", "\n").splitlines() if ln.strip()]
    # the progress line (redrawn in place) with its count, and the one result line; nothing else
    assert any(ln.startswith("train sft: 100%") and "4/4" in ln for ln in lines), screen
    assert {ln.split(":")[0] for ln in lines} <= {"train sft", "wrote " + str(out) + " (training_summary.json inside; log"}
    assert "{'loss'" not in screen and "INFO" not in screen and "transformers" not in screen
    log = (out / "logs" / "train-sft.log").read_text()
    assert log.count("train sft step") >= 4 and "'loss'" in log  # the trainer's dicts: each logged step, the end
    assert "transformers.trainer" in log  # library logs land here, not on screen
    assert json.loads((out / "train_config.json").read_text())["threads"] == 1

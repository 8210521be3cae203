"""Turn formats for models without a chat template, and the check that a template's special tokens
are in the tokenizer (a template-less GGUF never trains on tokens it lacks)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from sage_dialog.backends.chat_templates import (
    CHATML,
    GEMMA,
    TEMPLATES,
    end_of_turn,
    missing_tokens,
    required_tokens,
    template_for,
)
from sage_dialog.core.errors import UserError
from sage_dialog.train.common import load_tokenizer
from sage_dialog.train.config import ModelSection
from sage_dialog.train.templates import has_generation_markers

CONV = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"}]


@pytest.fixture
def bare(tiny_model: Path, tmp_path: Path) -> Path:
    """The tiny model (a Llama with ChatML tokens) without its chat template."""
    dst = tmp_path / "bare"
    shutil.copytree(tiny_model, dst)
    (dst / "chat_template.jinja").unlink()
    return dst


def test_every_named_template_keeps_the_loss_markers_and_ends_turns() -> None:
    for name, tpl in TEMPLATES.items():
        assert has_generation_markers(tpl), name
    assert end_of_turn(GEMMA) == "<end_of_turn>" and end_of_turn(CHATML) == "<|im_end|>"
    assert end_of_turn(TEMPLATES["mistral"]) is None  # ends with eos_token
    assert required_tokens(TEMPLATES["phi3"]) == ["<|assistant|>", "<|end|>", "<|user|>"]


def test_gemma_folds_the_system_prompt_into_the_first_user_turn(tiny_model: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_model)
    tok.chat_template = GEMMA
    text = tok.apply_chat_template(CONV, tokenize=False, add_generation_prompt=True)
    assert text == (f"{tok.bos_token or ''}<start_of_turn>user\nBe kind.\n\nHi<end_of_turn>\n"
                    "<start_of_turn>model\nHello!<end_of_turn>\n"
                    "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n")


def test_the_architecture_format_must_fit_the_vocabulary(tiny_model: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_model)
    assert missing_tokens(GEMMA, tok) == ["<start_of_turn>", "<end_of_turn>"]
    assert not missing_tokens(CHATML, tok)
    assert template_for("llama", tok) == ("chatml", CHATML)  # no Llama 3 header tokens: ChatML's are there
    assert template_for("gemma3_text", tok) is None  # Gemma's markers missing: none, never ChatML
    assert template_for("gpt_bigcode", tok) is None


def test_training_refuses_a_template_the_tokenizer_cannot_write(bare: Path) -> None:
    with pytest.raises(UserError, match=r"<start_of_turn>, <end_of_turn>.*does not have.*--chat-template"):
        load_tokenizer(ModelSection(name_or_path=str(bare), chat_template="gemma"))
    # a template-less model of an architecture without a known format is refused, not given ChatML
    cfg = json.loads((bare / "config.json").read_text())
    cfg["model_type"] = "gpt_neox"
    cfg["architectures"] = ["GPTNeoXForCausalLM"]
    (bare / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match=r"no chat template.*gpt_neox.*--chat-template"):
        load_tokenizer(ModelSection(name_or_path=str(bare)))


def test_hf_backend_gives_a_template_less_model_its_architecture_format(bare: Path) -> None:
    from sage_dialog.backends import ChatRequest, load_backend

    b = load_backend(f"hf:{bare}")
    assert b.tokenizer.chat_template == CHATML
    assert b.tokenizer.convert_tokens_to_ids("<|im_end|>") in b.eos_ids
    assert b.request_key(ChatRequest(CONV[:2]))["prompt"].endswith("<|im_start|>assistant\n")

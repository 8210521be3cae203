"""A second model family on the real path: Gemma 3 270M (a base model whose GGUF has no chat template,
no system role) through import, score-mode annotation, LoRA SFT, chat with the trained model and one
search seed, at minimal size. The model gets Gemma's own turn format (``<start_of_turn>`` /
``<end_of_turn>``, in its vocabulary), never ChatML's ``<|im_end|>`` (which it lacks: trained on
that, the chat answered ``2222...``)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from sage_dialog.cli import main

CONFIG = Path(__file__).parents[2] / "configs" / "quickstart-smollm2.yaml"

MINIMAL = [
    "base_model=gemma3-270m", "annotate.annotator.spec=hf:gemma3-270m", "search.judge=hf:gemma3-270m",
    "import.limit=2", "import.max_turns=4",
    "sft.train.max_steps=3", "sft.train.batch_size=2", "sft.data.max_length=256",
    "search.max_seeds=1", "search.config.turns=1", "search.config.candidates=2",
    "search.config.sampling.max_tokens=32",
]


def test_gemma_turn_format_has_its_tokens(gemma3: Path) -> None:
    from transformers import AutoTokenizer

    from sage_dialog.backends.chat_templates import GEMMA, missing_tokens
    from sage_dialog.train.common import load_tokenizer
    from sage_dialog.train.config import ModelSection

    tok = AutoTokenizer.from_pretrained(gemma3)
    assert tok.chat_template == GEMMA and not missing_tokens(GEMMA, tok)
    text = tok.apply_chat_template([{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"},
                                    {"role": "assistant", "content": "Hello!"}], tokenize=False)
    assert text == ("<bos><start_of_turn>user\nBe kind.\n\nHi<end_of_turn>\n"
                    "<start_of_turn>model\nHello!<end_of_turn>\n")
    # asked for ChatML, training refuses: Gemma's vocabulary has no <|im_end|>
    from sage_dialog.core.errors import UserError

    with pytest.raises(UserError, match=r"<\|im_start\|>, <\|im_end\|>.*does not have"):
        load_tokenizer(ModelSection(name_or_path=str(gemma3), chat_template="chatml"))


@pytest.mark.slow
def test_gemma_runs_import_annotate_sft_chat_search(gemma3: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("chitchat_dataset")
    from sage_dialog.backends import ChatRequest, SamplingParams, load_backend

    run_dir = tmp_path / "run"
    rc = main(["run", str(CONFIG), f"run_dir={run_dir}", *MINIMAL, "--until", "search", "--no-gates"])
    out = capsys.readouterr().out
    assert rc == 0, out
    for s in ("import", "annotate", "chain", "mix", "sft", "search"):
        assert json.loads((run_dir / s / "manifest.json").read_text())["finished"], s
    annotated = [json.loads(x) for f in sorted((run_dir / "annotate").glob("annotated-*.jsonl"))
                 for x in f.read_text().splitlines()]
    assert annotated and all(t.get("action") or t.get("state") for d in annotated for t in d["turns"])
    model = run_dir / "sft" / "model"
    template = (model / "chat_template.jinja").read_text()
    assert "<start_of_turn>" in template and "<|im_end|>" not in template
    trees = list((run_dir / "search").rglob("*.jsonl"))
    assert trees and any(p.read_text().strip() for p in trees)
    # the trained model chats: real tokens, not one token repeated ("2222...")
    b = load_backend(f"hf:{model}")
    [res] = asyncio.run(b.generate([ChatRequest([{"role": "user", "content": "I lost my job today."}], n=2,
                                                sampling=SamplingParams(max_tokens=24, seed=3))]))
    for text in res.texts:
        ids = b.tokenizer(text, add_special_tokens=False)["input_ids"]
        assert len(set(ids)) > 2, text

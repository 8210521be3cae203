"""The files we write are what the real trainers read: `datasets` + TRL's chat-template helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

from sage_dialog.formats import preferences, sharegpt, trl
from sage_dialog.stages.chain import chain_dialog

FIX = Path(__file__).parent / "fixtures"


def test_trl_reads_our_sft_and_preference_files(tmp_path: Path, tiny_model: Path) -> None:
    datasets = pytest.importorskip("datasets")
    data_utils = pytest.importorskip("trl.data_utils")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    sft = tmp_path / "sft.jsonl"
    trl.write_trl_sft(sft, [chain_dialog(d) for d in sharegpt.read_sharegpt(FIX / "annotated.json")])
    ds = datasets.load_dataset("json", data_files=str(sft), split="train")
    assert ds.column_names == ["messages"] and len(ds) == 2
    assert data_utils.is_conversational(ds[0])
    text = data_utils.apply_chat_template(ds[0], tok)["text"]
    assert "{u_motivation: sharing news, u_emotion: excited, u_topic: [job, interview]}" in text
    assert "I got the job!" in text

    dpo = tmp_path / "dpo.jsonl"
    preferences.write_preferences(dpo, preferences.read_preferences(FIX / "prefs" / "original.json", "original"), "trl")
    pds = datasets.load_dataset("json", data_files=str(dpo), split="train")
    assert sorted(pds.column_names) == ["chosen", "prompt", "rejected"]
    assert data_utils.is_conversational(pds[1])
    out = data_utils.apply_chat_template(pds[1], tok)
    assert "Fourth. I am starting to think" in out["prompt"]
    assert "{u_motivation: seeking support" in out["chosen"] and "Many people pass" in out["chosen"]
    assert "Maybe driving is not for you." in out["rejected"]

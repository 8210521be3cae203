"""A tiny SAC policy that speaks the sandbox world: built from nothing and fine-tuned for a few seconds.

A random-weight model writes no action of the world, so every dialog gets the same reward and RL has
nothing to learn from; this one writes tag blocks and replies of the world, some fitting, some clumsy.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from sage_dialog.sandbox.corpus import CorpusConfig, generate_corpus
from sage_dialog.sandbox.oracles import OracleAnnotator


def sac_conversations(n: int, seed: int) -> list[list[dict[str, str]]]:
    from sage_dialog.formats.trl import dialog_to_messages

    dialogs = generate_corpus(CorpusConfig(n_dialogs=n, seed=seed))
    results = asyncio.run(OracleAnnotator().annotate(dialogs))
    rows = []
    for d, res in zip(dialogs, results, strict=True):
        assert res.tags is not None
        turns = []
        for i, (t, tags) in enumerate(zip(d.turns, res.tags, strict=True)):
            if t.role == "assistant":
                t = t.model_copy(update={"state": res.tags[i - 1], "action": tags})
            turns.append(t)
        rows.append(dialog_to_messages(d.model_copy(update={"turns": turns}), "chained"))
    return rows


@pytest.fixture(scope="session")
def sandbox_policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of a ~0.5M-parameter Llama fine-tuned on 160 SAC-tagged sandbox dialogs (full SFT, 40 steps)."""
    from sage_dialog.core import threads
    from sage_dialog.sandbox.tiny_model import build_tiny_model
    from sage_dialog.train.config import SFTRunConfig
    from sage_dialog.train.sft import train_sft

    root = tmp_path_factory.mktemp("sandbox-policy")
    convs = sac_conversations(160, seed=5)
    data = root / "train.jsonl"
    data.write_text("".join(json.dumps({"messages": c}) + "\n" for c in convs), encoding="utf-8")
    base = build_tiny_model(root / "base", [m["content"] for c in convs for m in c], vocab_size=800,
                            hidden_size=128, num_layers=2, seed=0, space_style="suffix")
    threads.apply(1)
    cfg = SFTRunConfig.model_validate({
        "model": {"name_or_path": str(base)}, "adapter": {"method": "full"},
        "data": {"train": str(data), "max_length": 256},
        "train": {"epochs": 2.0, "learning_rate": 3e-3, "batch_size": 8, "logging_steps": 50, "save_steps": None,
                  "save_total_limit": 1, "device": "cpu", "seed": 0},
        "output_dir": str(root / "policy")})
    return train_sft(cfg)

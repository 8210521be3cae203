"""Toy data for the training tests: small, deterministic, learnable (the reply follows from the user turn)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sage_dialog.core import sac
from sage_dialog.core.schema import Tags

EMOTIONS = ["sad", "happy", "anxious", "tired", "proud", "angry"]
TOPICS = ["exam", "job", "dog", "trip", "movie", "family"]
REPLY = {
    "sad": ("comfort", "gentle", "That sounds really hard."),
    "happy": ("praise", "excited", "That's great news!"),
    "anxious": ("reassurance", "calm", "You will be okay."),
    "tired": ("advice", "calm", "Maybe rest a bit today."),
    "proud": ("praise", "happy", "You should be proud!"),
    "angry": ("empathy", "calm", "That sounds really unfair."),
}


def sac_reply(emotion: str, topic: str) -> str:
    mot, emo, text = REPLY[emotion]
    return sac.render_turn(
        text,
        state=Tags(motivation="venting", emotion=emotion, topics=[topic]),
        action=Tags(motivation=mot, emotion=emo, topics=[topic]),
    )


def toy_conversations(n: int = 24) -> list[list[dict[str, str]]]:
    out = []
    for i in range(n):
        emo, topic = EMOTIONS[i % len(EMOTIONS)], TOPICS[(i // len(EMOTIONS)) % len(TOPICS)]
        out.append([
            {"role": "user", "content": f"I feel {emo} about my {topic}."},
            {"role": "assistant", "content": sac_reply(emo, topic)},
        ])
    return out


def toy_preferences(n: int = 24) -> list[dict]:
    out = []
    for conv in toy_conversations(n):
        emo = conv[0]["content"].split()[2]
        wrong = EMOTIONS[(EMOTIONS.index(emo) + 1) % len(EMOTIONS)]
        out.append({
            "prompt": [conv[0]],
            "chosen": [conv[1]],
            "rejected": [{"role": "assistant", "content": sac.strip(sac_reply(wrong, "job")) + " Haha."}],
        })
    return out


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def sft_data(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "sft.jsonl", [{"messages": c} for c in toy_conversations()])


@pytest.fixture
def dpo_data(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "dpo.jsonl", toy_preferences())


def fast_overrides(model: Path, data: Path, out: Path, **kw: object) -> list[str]:
    """Overrides for a short CPU run: no mid-run checkpoints or evals unless asked."""
    base = {
        "model.name_or_path": model,
        "data.train": data,
        "output_dir": out,
        "train.batch_size": 4,
        "train.logging_steps": 2,
        "train.save_steps": 1000,
        "train.eval_steps": 1000,
        "train.lr_scheduler": "constant",
    }
    base.update(kw)
    return [f"{k}={v}" for k, v in base.items()]


@pytest.fixture
def fast():
    """``fast(model, data, out, **overrides)`` -> override list for a short run (see fast_overrides)."""
    return fast_overrides


@pytest.fixture
def toy():
    """The toy-data helpers (conversations, preferences, writer) for tests that need variants."""
    import types

    return types.SimpleNamespace(conversations=toy_conversations, preferences=toy_preferences,
                                 write_jsonl=write_jsonl)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Train with one intra-op thread: the models here are tiny, and on a busy 2-core machine two
    spinning OpenMP threads made each step ~8x slower (measured). Restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

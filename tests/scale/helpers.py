"""Helpers of the scale-out tests: subprocess launches with this checkout's sources, toy data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import sage_dialog

SRC = Path(sage_dialog.__file__).resolve().parents[1]  # this checkout's src/, for the launched processes


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a launched process: offline, quiet, this checkout's sources first."""
    env = dict(os.environ)
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
                "PYTHONPATH": os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)})
    env.update(extra)
    return env


def accelerate(*args: str) -> list[str]:
    """The ``accelerate launch`` command line (through this interpreter, so the venv is the same)."""
    return [sys.executable, "-m", "accelerate.commands.launch", *args]


def run(cmd: list[str], timeout: float = 300, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=timeout, **kw)  # type: ignore[call-overload]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


EMOTIONS = ["sad", "happy", "anxious", "tired", "proud", "angry"]
REPLIES = {"sad": "That sounds really hard.", "happy": "That's great news!", "anxious": "You will be okay.",
           "tired": "Maybe rest a bit today.", "proud": "You should be proud!", "angry": "That sounds unfair."}


def _reply(emo: str, topic: str) -> str:
    return (f"{{u_motivation: venting, u_emotion: {emo}, u_topic: [{topic}]}} "
            f"{{a_motivation: comfort, a_emotion: calm, a_topic: [{topic}]}} {REPLIES[emo]}")


def sft_rows(n: int = 32) -> list[dict]:
    topics = ["exam", "job", "dog", "trip"]
    return [{"messages": [{"role": "user", "content": f"I feel {EMOTIONS[i % 6]} about my {topics[i % 4]}."},
                          {"role": "assistant", "content": _reply(EMOTIONS[i % 6], topics[i % 4])}]}
            for i in range(n)]


def dpo_rows(n: int = 32) -> list[dict]:
    out = []
    for r in sft_rows(n):
        user, good = r["messages"]
        emo = user["content"].split()[2]
        wrong = EMOTIONS[(EMOTIONS.index(emo) + 1) % 6]
        out.append({"prompt": [user], "chosen": [good],
                    "rejected": [{"role": "assistant", "content": REPLIES[wrong] + " Haha."}]})
    return out

"""The training summary written next to a trained model (``training_summary.json``)."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from sage_dialog.core.io import write_json

SUMMARY_FILE = "training_summary.json"


class TrainingSummary(BaseModel):
    """What a run did: steps, tokens, speed and losses (``None`` when not measured)."""

    model_config = ConfigDict(extra="forbid")
    stage: str
    base_model: str
    method: str
    steps: int
    epochs: float
    tokens: int
    wall_time_s: float
    tokens_per_s: float
    first_train_loss: float | None = None
    final_train_loss: float | None = None
    final_eval_loss: float | None = None
    train_examples: int
    eval_examples: int
    trainable_params: int
    total_params: int
    resumed_from: str | None = None
    device: str
    log_history: list[dict[str, Any]] = []


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def losses(log_history: list[dict[str, Any]]) -> tuple[float | None, float | None, float | None]:
    """(first train loss, last train loss, last eval loss) from a Trainer's log history."""
    train = [h["loss"] for h in log_history if "loss" in h]
    ev = [h["eval_loss"] for h in log_history if "eval_loss" in h]
    return (
        _finite(train[0]) if train else None,
        _finite(train[-1]) if train else None,
        _finite(ev[-1]) if ev else None,
    )


class Timer:
    """Wall-clock timer for the training loop only (not model loading)."""

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        self.elapsed = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.elapsed = time.perf_counter() - self.start


def write_summary(out_dir: str | Path, summary: TrainingSummary) -> Path:
    path = Path(out_dir) / SUMMARY_FILE
    write_json(path, summary)
    return path

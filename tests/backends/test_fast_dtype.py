"""``dtype: fast`` (backends) and ``precision: fast`` (training): bfloat16 only where the CPU computes it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sage_dialog.backends.base import ChatRequest, SamplingParams
from sage_dialog.backends.hf import HFBackend
from sage_dialog.core import cpu
from sage_dialog.train.common import precision_args
from sage_dialog.train.config import TrainSection


@pytest.mark.parametrize(("native", "expected"), [(True, "bfloat16"), (False, "float32")])
def test_fast_dtype_follows_the_cpu(tiny_model: Path, monkeypatch: pytest.MonkeyPatch, native: bool,
                                    expected: str) -> None:
    monkeypatch.setattr(cpu, "native_bf16", lambda: native)
    be = HFBackend(str(tiny_model), device="cpu", dtype="fast", share_base=False)
    try:
        assert be.dtype == expected
        assert str(next(be.lm.parameters()).dtype) == f"torch.{expected}"
        assert be.identity()["options"]["dtype"] == expected  # a cache made in one format never answers the other
        req = ChatRequest(messages=[{"role": "user", "content": "hi"}], sampling=SamplingParams(max_tokens=4))
        (c,) = asyncio.run(be.generate([req]))
        assert c.completions[0].tokens_out > 0
    finally:
        asyncio.run(be.aclose())


@pytest.mark.parametrize(("native", "bf16"), [(True, True), (False, False)])
def test_fast_precision_is_bf16_autocast_only_on_a_bf16_cpu(monkeypatch: pytest.MonkeyPatch, native: bool,
                                                           bf16: bool) -> None:
    monkeypatch.setattr(cpu, "native_bf16", lambda: native)
    args = precision_args(TrainSection(precision="fast"), "cpu")
    assert args["use_cpu"] is True and args["bf16"] is bf16 and args["fp16"] is False
    assert precision_args(TrainSection(precision="auto"), "cpu")["bf16"] is False  # auto stays fp32 on CPU

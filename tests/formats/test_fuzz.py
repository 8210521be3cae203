"""Whatever bytes a file holds, validate and convert answer with problem lines, never a crash."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sage_dialog.core.errors import UserError
from sage_dialog.formats import FORMATS, check_file, convert_file

_scalar = st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from(
    ["", "human", "gpt", "user", "assistant", "system", "{motivation: x, emotion", "{a_motivation: y} hi",
     "Dialog A is better", "A", "M", "identity_1", "a.txt"])
_keys = st.sampled_from(["id", "conversations", "from", "value", "messages", "role", "content", "prompt",
                         "chosen", "rejected", "instruction", "input", "output", "history", "label", "predict",
                         "size", "kind", "turns", "text", "v", "x"])
_json = st.recursive(_scalar, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=5),
                     max_leaves=25)

# SAGE_FUZZ_EXAMPLES=3000 for a longer hunt; the suite default keeps the run to seconds.
N = int(os.environ.get("SAGE_FUZZ_EXAMPLES", "150"))
_NAMES = [n for n, f in FORMATS.items() if f.folder is not True and n not in ("empathetic",)]
_SUFFIX = {"trl-sft": ".jsonl", "dialogs": ".jsonl", "pairs": ".jsonl", "prefs-trl": ".jsonl",
           "combined-tsv": ".tsv", "consensus-tsv": ".tsv"}


def _run(path: Path, fmt: str) -> None:
    name, problems, n = check_file(path, fmt)
    assert name == fmt and n >= 0
    assert isinstance(problems, list) and all(isinstance(p, str) and "\n" not in p for p in problems)
    if FORMATS[fmt].read is not None:
        out = path.parent / "out" / "o.jsonl"
        try:
            convert_file(path, out, src_format=fmt)
        except UserError as e:
            assert e.problems
            assert problems, f"validate passed but convert failed: {e.problems}"  # a clean file converts
            assert not out.exists()


@settings(max_examples=N, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_json, min_size=1, max_size=3), st.sampled_from(_NAMES), st.booleans())
def test_structured_garbage(docs: list[object], fmt: str, as_lines: bool) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / ("in" + _SUFFIX.get(fmt, ".json"))
        text = "\n".join(json.dumps(x) for x in docs) if as_lines else json.dumps(docs[0])
        path.write_text(text, encoding="utf-8")
        _run(path, fmt)


@settings(max_examples=max(1, N * 2 // 3), deadline=None)
@given(st.binary(max_size=200), st.sampled_from(_NAMES))
def test_raw_bytes(data: bytes, fmt: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / ("in" + _SUFFIX.get(fmt, ".json"))
        path.write_bytes(data)
        _run(path, fmt)


@settings(max_examples=max(1, N * 2 // 5), deadline=None)
@given(st.lists(st.text(max_size=40), max_size=6), st.sampled_from(["transcripts", "transcripts-full",
                                                                      "transcripts-converted"]))
def test_transcript_garbage(lines: list[str], fmt: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d) / "t"
        folder.mkdir()
        (folder / "a.txt").write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
        _, problems, _ = check_file(folder, fmt)
        assert all(isinstance(p, str) for p in problems)

"""The paraphrase set of injected verdicts (issue 28): ``data/injection_paraphrases.jsonl``.

Each line is a template (``kind`` says what trick it uses: homoglyphs, zero-width or bidi
characters, full-width or styled letters, number words, other verbs, forged delimiters,
instructions, other languages, spacing, markdown, quotes, JSON) with placeholders filled per
judge: ``{noun} {x}`` is ``Response 2`` for the selector, ``Dialog B`` for the pairwise judge.
Used by ``tests/search/test_guard_paraphrases.py`` and ``benchmarks/bench_injection.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

DATA = Path(__file__).parent / "data" / "injection_paraphrases.jsonl"
_WORDS = {"1": "one", "2": "two", "3": "three", "A": "A", "B": "B"}
_ORD = {"1": "first", "2": "second", "3": "third", "A": "first", "B": "second"}


def _fullwidth(s: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else "\u3000" if c == " " else c for c in s)


def _bold(s: str) -> str:
    return "".join(chr(0x1D400 + ord(c) - 65) if "A" <= c <= "Z" else chr(0x1D41A + ord(c) - 97) if "a" <= c <= "z"
                   else c for c in s)


def attacks(noun: str, x: str) -> list[dict[str, str]]:
    """Every attack of the set, filled for ``noun`` (Response, Dialog) and target ``x`` (2, B)."""
    values = {
        "noun": noun, "x": x, "xw": _WORDS.get(x, x), "ord": _ORD.get(x, x),
        "noun_h": noun.replace("e", "\u0435").replace("o", "\u043e"),  # Cyrillic е, о
        "noun_z": "\u200b".join(noun),
        "noun_rev": noun[::-1], "noun_fw": _fullwidth(noun), "x_fw": _fullwidth(x),
        "noun_bold": _bold(noun), "noun_spaced": " ".join(noun),
    }
    out = []
    for line in DATA.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        text = rec["template"]
        for k, v in values.items():
            text = text.replace("{" + k + "}", v)
        out.append({"id": rec["id"], "kind": rec["kind"], "text": text})
    return out

"""Defences of the LLM judges against text that tries to steer them (issue 18, prompt injection).

A candidate reply or dialog is data to be judged, never an instruction. Three layers, used by
:mod:`sage_dialog.roles.selector` and :mod:`sage_dialog.roles.pairwise_judge`:

1. :func:`neutralize` removes, from any model-written text shown to a judge, what reads like a
   verdict ("Response 1 is better", "Dialog B is better", "No good one"), forged delimiters
   ("[End of Response 2]") and "ignore the previous instructions"; :func:`block` shows the text
   between delimiters the prompt tells the judge to treat as data.
2. :func:`answer_slot` is the only part of a generated answer a verdict is read from: the first
   non-empty line, with quoted spans removed - so a judge that quotes a candidate's
   "Response 1 is better" is not read as saying it.
3. Order averaging (the judges' ``orders`` / ``average_orders`` options) lives in the judges.
"""

from __future__ import annotations

import re

REMOVED = "[verdict text removed]"

_NOUNS = r"(?:responses?|dialog(?:ue)?s?|repl(?:y|ies)|candidates?|options?|conversations?|answers?|assistants?)"
_VERDICT = re.compile(
    rf"\b{_NOUNS}\s*[#:]?\s*[\(\[]?\s*(?:[A-Za-z]|\d+)\s*[\)\]]?\s*(?:\)|:)?\s+(?:is|was|are)\s+"
    r"(?:the\s+|clearly\s+|much\s+|definitely\s+|obviously\s+)*(?:better|best|winner|preferred)\b",
    re.IGNORECASE,
)
_NONE = re.compile(r"\bno good one\b|\bit'?s a tie\b|\bneither is (?:good|better)\b", re.IGNORECASE)
_DELIM = re.compile(rf"\[\s*(?:end\s+of\s+)?(?:{_NOUNS}|history)\b[^\]\n]{{0,20}}\]", re.IGNORECASE)
_IGNORE = re.compile(
    r"\b(?:ignore|disregard|forget)\s+(?:all\s+|any\s+)?(?:the\s+|your\s+)?(?:previous|prior|above|earlier|other)?\s*"
    r"(?:instructions?|rules?|prompts?|criteria)\b",
    re.IGNORECASE,
)
_QUOTED = re.compile(r'"[^"\n]*"|“[^”\n]*”|«[^»\n]*»|`[^`\n]*`')
# a line that is nothing but one of the closed answers (an echo of the prompt's option list)
_OPTION_LINE = re.compile(
    rf"^\W*(?:{_NOUNS}\s*[#:]?\s*\(?\s*(?:[A-Za-z]|\d+)\s*\)?\s+is\s+(?:the\s+)?better|tie|no good one)\W*$",
    re.IGNORECASE,
)
_LEAD = re.compile(r"^\W*(?:(?:final\s+)?(?:answer|verdict|decision)\s*[:\-]\s*)?", re.IGNORECASE)


def neutralize(text: str) -> str:
    """``text`` with verdict phrases, forged delimiters and "ignore the instructions" replaced."""
    text = _VERDICT.sub(REMOVED, text)
    text = _NONE.sub(REMOVED, text)
    text = _DELIM.sub("[...]", text)
    return _IGNORE.sub("[instruction removed]", text)


def block(label: str, text: str) -> str:
    """``text`` (already neutralized) between ``[label]`` and ``[End of label]`` lines."""
    return f"[{label}]\n{text}\n[End of {label}]"


def _words(line: str) -> str:
    return " ".join(re.sub(r"\W+", " ", line).lower().split())


def answer_slot(text: str) -> str:
    """The judge's own answer: its first non-empty line, quoted spans removed, a leading
    ``Answer:`` / ``Verdict:`` and markdown stripped. A judge that copies the option list (two
    different closed answers on its first two lines) has no answer: ``""``."""
    lines = [x for x in (_QUOTED.sub(" ", raw).replace("*", "").strip() for raw in text.splitlines()) if x]
    if not lines:
        return ""
    first = _LEAD.sub("", lines[0], count=1).strip()
    if len(lines) > 1 and _OPTION_LINE.match(first) and _OPTION_LINE.match(lines[1]) \
            and _words(first) != _words(lines[1]):
        return ""
    return first


__all__ = ["REMOVED", "answer_slot", "block", "neutralize"]

"""Defences of the LLM judges against text that tries to steer them (issue 18, prompt injection).

A candidate reply or dialog is data to be judged, never an instruction. Three layers, used by
:mod:`sage_dialog.roles.selector` and :mod:`sage_dialog.roles.pairwise_judge`:

0. :func:`normalize` comes before anything else (issue 28: the filter alone was a word filter that
   14 of 16 rewordings passed): NFKC (full-width and styled letters, ligatures), zero-width and
   bidirectional controls removed, and for *matching* only, Cyrillic and Greek letters that look
   like Latin ones read as those (``Rеsponse`` with a Cyrillic ``е``). What the judge is shown is
   the NFKC text without the invisible characters; the look-alike letters stay as written.
1. Structure: :func:`block` shows each candidate between delimiter lines that carry a code of the
   request (:func:`request_code`), which a candidate cannot know, so it cannot forge its own end.
   :func:`neutralize` removes, from any model-written text shown to a judge, what reads like a
   verdict ("Response 1 is better", "Dialog B is better", "No good one"), forged delimiters
   ("[End of Response 2]") and "ignore the previous instructions"; :func:`block` shows the text
   between delimiters the prompt tells the judge to treat as data.
2. :func:`answer_slot` is the only part of a generated answer a verdict is read from: the first
   non-empty line, with quoted spans removed - so a judge that quotes a candidate's
   "Response 1 is better" is not read as saying it.
3. Order averaging (the judges' ``orders`` / ``average_orders`` options) lives in the judges.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

REMOVED = "[verdict text removed]"

_NOUNS = r"(?:responses?|dialog(?:ue)?s?|repl(?:y|ies)|candidates?|options?|conversations?|answers?|assistants?)"
_ID = r"(?:[A-Za-z]|\d+|one|two|three|four|five|first|second|third|last)"
_VERDICT = re.compile(
    rf"\b{_NOUNS}[\s\-]*[#:]?\s*[\(\[]?\s*{_ID}\s*[\)\]]?\s*(?:\)|:)?[\s\-]+(?:(?:is|was|are)[\s\-]+"
    r"(?:the\s+|clearly\s+|much\s+|definitely\s+|obviously\s+|far\s+)*"
    r"(?:better|best|winner|preferred|superior|stronger|the\s+(?:right|correct)\s+(?:one|choice))|wins)\b",
    re.IGNORECASE,
)
# "pick Response 2", "I vote for Dialog B": an order to the judge that names a candidate
_PICK = re.compile(
    rf"\b(?:pick|choose|select|prefer|vote\s+for|go\s+with|answer)\s+(?:the\s+)?{_NOUNS}[\s\-]*[#:]?\s*{_ID}\b",
    re.IGNORECASE,
)
_NONE = re.compile(r"\bno good one\b|\bit'?s a tie\b|\bneither is (?:good|better)\b", re.IGNORECASE)
_DELIM = re.compile(rf"[\[\(<]\s*/?\s*(?:end\s+of\s+)?(?:{_NOUNS}|history)\b[^\]\)>\n]{{0,20}}[\]\)>]",
                    re.IGNORECASE)
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


# zero-width, joiners, bidirectional embeddings/overrides/isolates, soft hyphen, word joiner, BOM,
# Mongolian vowel separator, invisible operators, tag characters: invisible, and able to split a
# word the filter looks for ("Res\u200bponse") or reorder what the judge reads
_INVISIBLE = re.compile("[\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f"
                        "\ufeff\ufe00-\ufe0f\U000e0000-\U000e007f]")
# Cyrillic and Greek letters that look like Latin ones (Unicode's confusables, the common subset);
# one character for one, so a match in the folded text is at the same place in the shown text
_LOOKALIKE = str.maketrans(
    "АВЕКМНОРСТХУаеорсухіјѕԁһԛԝѵӏ"
    "ΑΒΕΖΗΙΚΜΝΟΡΤΥΧαβεικνοορτυχ",
    "ABEKMHOPCTXYaeopcyxijsdhqwvl"
    "ABEZHIKMNOPTYXaBeiKvooptuX",
)


def normalize(text: str) -> str:
    """``text`` as a judge should be shown it: NFKC, without zero-width or bidirectional controls."""
    return _INVISIBLE.sub("", unicodedata.normalize("NFKC", text))


def _sub_folded(pattern: re.Pattern[str], repl: str, text: str) -> str:
    """``pattern.sub(repl, text)`` with the matching done on ``text`` with look-alike letters
    folded to Latin (the replacement is made in ``text`` itself, at the same places)."""
    folded = text.translate(_LOOKALIKE)
    out, last = [], 0
    for m in pattern.finditer(folded):
        out.append(text[last:m.start()])
        out.append(repl)
        last = m.end()
    out.append(text[last:])
    return "".join(out)


def neutralize(text: str) -> str:
    """``text`` normalized (:func:`normalize`), then verdict phrases, forged delimiters and "ignore
    the instructions" replaced (matched with look-alike letters read as Latin)."""
    text = normalize(text)
    text = _sub_folded(_VERDICT, REMOVED, text)
    text = _sub_folded(_PICK, REMOVED, text)
    text = _sub_folded(_NONE, REMOVED, text)
    text = _sub_folded(_DELIM, "[...]", text)
    return _sub_folded(_IGNORE, "[instruction removed]", text)


def request_code(*parts: str) -> str:
    """A code for one judge request, shown on its delimiter lines (``[Response 1 #3f9a0c]``), from the
    task's seed and what all candidates share (the history), never from a candidate's own text: the
    candidate's author never sees the judge's prompt, so it cannot forge an end line, and its text
    cannot move the code (a small judge's decision moved with the code's digits when it was derived
    from the candidates: benchmarks/RESULTS-injection.md). The same task gets the same code, so the
    response cache stays valid."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode("utf-8", "surrogatepass"))
        h.update(b"\x1f")
    return h.hexdigest()[:6]


def block(label: str, text: str, code: str = "") -> str:
    """``text`` (already neutralized) between ``[label #code]`` and ``[End of label #code]`` lines."""
    tag = f"{label} #{code}" if code else label
    return f"[{tag}]\n{text}\n[End of {tag}]"


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


__all__ = ["REMOVED", "answer_slot", "block", "neutralize", "normalize", "request_code"]

"""Judgement files of the original SAGE scripts (FORMATS.md section 6), read and written as the
original analysis script does.

* judge input: ``[{"instruction": prompt, "input": "", "output": "<transcript file name>"}]``;
* judge output: ``[{"label": "<file name>", "predict": "<judge text>"}]``, one file per judge and
  order. Files whose name contains ``rev`` were judged with the dialogs swapped: their A/B answer is
  flipped back before counting. An answer that does not start with ``Dialog X is better`` counts as
  ``M`` (:func:`parse_answer`; ``lenient=True`` searches anywhere, any case, and gives ``M`` when
  both letters appear);
* ``combined_predictions.tsv``: header ``Label`` then one column per judgement file (file names
  sorted); one row per label of any file (sorted), cells A, B or M; a label a file lacks is ``M``
  there;
* ``consensus_predictions.tsv``: ``Prediction<TAB>Count`` then rows ``A``, ``B``, ``M`` counting the
  labels on which every file agrees, then ``Filename<TAB>Consensus Prediction`` and one row per such
  label, ordered by prediction then label. Labels on which files disagree are left out: that is how
  the original handled position bias.

Both tables are written by the ``csv`` module with tab delimiters, so lines end in CRLF, byte for byte
like the original. One deliberate difference: ``rev`` is looked for in the file *name* only (the
original looked at the whole path, so a folder named ``...rev...`` flipped every file).

Typical use (compare stage)::

    preds = read_judgement_dir("results/judgement_base_sage_judge")   # {file: {label: "A"|"B"|"M"}}
    write_combined_tsv(out / "combined_predictions.tsv", preds)
    write_consensus_tsv(out / "consensus_predictions.tsv", preds)
"""

from __future__ import annotations

import csv
import io as pyio
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sage_dialog.core import io
from sage_dialog.core.errors import UserError, where
from sage_dialog.formats._common import type_name

Label = Literal["A", "B", "M"]
LABELS: tuple[Label, ...] = ("A", "B", "M")
_ORIGINAL = re.compile(r"Dialog ([A-Za-z]) is better")
_LENIENT = re.compile(r"\bDialog\s+([AB])\s+is\s+better\b", re.IGNORECASE)


@dataclass(frozen=True)
class JudgeInput:
    """One judge request: the prompt and the transcript file name it is about."""

    instruction: str
    output: str
    input: str = ""


@dataclass(frozen=True)
class JudgeOutput:
    """One judge answer: the transcript file name (``label``) and the judge's raw text."""

    label: str
    predict: str


def parse_answer(text: str, *, lenient: bool = False) -> Label:
    """The verdict letter of one judge answer.

    Default (the original rule): ``A``/``B`` when the text *starts* with ``Dialog A is better`` /
    ``Dialog B is better`` (case-sensitive), else ``M`` (a letter other than A/B, which crashed the
    original, is ``M`` too). ``lenient``: the phrase anywhere, any case and spacing; ``M`` if both
    letters appear.
    """
    if not lenient:
        m = _ORIGINAL.match(text)
        letter = m.group(1) if m else "M"
        return letter if letter in ("A", "B") else "M"  # type: ignore[return-value]
    found = {m.group(1).upper() for m in _LENIENT.finditer(text)}
    if found == {"A"}:
        return "A"
    if found == {"B"}:
        return "B"
    return "M"


def is_reversed(file_name: str) -> bool:
    """Whether a judgement file was made with the two dialogs swapped (its name contains ``rev``)."""
    return "rev" in Path(file_name).name


def flip(label: Label) -> Label:
    return {"A": "B", "B": "A", "M": "M"}[label]  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# judge input / output files


def _array(path: Path) -> list[Any]:
    data = io.read_json(path)
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a JSON array, got {type_name(data)}")
    if not data:
        raise UserError(f"{path}: empty array, expected judgement records")
    return data


def _string_fields(path: Path, i: int, obj: Any, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> list[str]:
    if not isinstance(obj, dict):
        return [f"{where(path, i)}: expected an object, got {type_name(obj)}"]
    out = [f"{where(path, i, k)}: missing" for k in required if k not in obj]
    out += [f"{where(path, i, k)}: unexpected key" for k in obj if k not in required + optional]
    out += [f"{where(path, i, k)}: expected a string, got {type_name(obj[k])}"
            for k in required + optional if k in obj and not isinstance(obj[k], str)]
    return out


def check_judge_input(path: str | Path) -> tuple[list[str], int]:
    p = Path(path)
    data = _array(p)
    return [x for i, o in enumerate(data, 1) for x in _string_fields(p, i, o, ("instruction", "output"), ("input",))], len(data)


def check_judge_output(path: str | Path) -> tuple[list[str], int]:
    """Shape problems and duplicate labels of a judge output file."""
    p = Path(path)
    data = _array(p)
    out: list[str] = []
    seen: dict[str, int] = {}
    for i, o in enumerate(data, 1):
        probs = _string_fields(p, i, o, ("label", "predict"))
        out += probs
        if not probs:
            if o["label"] in seen:
                out.append(f"{where(p, i, 'label')}: duplicate label {o['label']!r} (first in record {seen[o['label']]})")
            seen.setdefault(o["label"], i)
    return out, len(data)


def read_judge_input(path: str | Path) -> list[JudgeInput]:
    p = Path(path)
    probs, _ = check_judge_input(p)
    if probs:
        raise UserError(probs)
    return [JudgeInput(instruction=o["instruction"], output=o["output"], input=o.get("input", "")) for o in _array(p)]


def read_judge_output(path: str | Path) -> list[JudgeOutput]:
    p = Path(path)
    probs, _ = check_judge_output(p)
    if probs:
        raise UserError(probs)
    return [JudgeOutput(label=o["label"], predict=o["predict"]) for o in _array(p)]


def _dump(path: str | Path, records: list[dict[str, Any]]) -> None:
    with io.atomic_write(path) as fh:
        fh.write(json.dumps(records, ensure_ascii=False, indent=4) + "\n")


def write_judge_input(path: str | Path, items: Iterable[JudgeInput]) -> int:
    """Atomically write a judge input file; return the count."""
    recs = [{"instruction": x.instruction, "input": x.input, "output": x.output} for x in items]
    _dump(path, recs)
    return len(recs)


def write_judge_output(path: str | Path, items: Iterable[JudgeOutput]) -> int:
    """Atomically write a judge output file; return the count."""
    recs = [{"label": x.label, "predict": x.predict} for x in items]
    _dump(path, recs)
    return len(recs)


def file_predictions(path: str | Path, *, lenient: bool = False) -> dict[str, Label]:
    """``{label: A|B|M}`` of one judge output file, flipped back when its name contains ``rev``."""
    rev = is_reversed(Path(path).name)
    out: dict[str, Label] = {}
    for o in read_judge_output(path):
        ans = parse_answer(o.predict, lenient=lenient)
        out[o.label] = flip(ans) if rev else ans
    return out


def fill_missing(preds: Mapping[str, Mapping[str, Label]]) -> dict[str, dict[str, Label]]:
    """Every file gets every label of any file (sorted); a label a file lacks is ``M`` there."""
    labels = sorted(set().union(*(p.keys() for p in preds.values()))) if preds else []
    return {name: {lab: p.get(lab, "M") for lab in labels} for name, p in sorted(preds.items())}


def read_judgement_dir(folder: str | Path, *, lenient: bool = False) -> dict[str, dict[str, Label]]:
    """Predictions of every ``*.json`` judge output file in a folder: ``{file name: {label: A|B|M}}``.

    Files in name order, labels the union over files (sorted), a label a file lacks ``M`` there (the
    original rule). Every problem of every file is reported together.
    """
    d = Path(folder)
    if not d.is_dir():
        raise UserError(f"{d}: expected a folder of judge output files")
    files = sorted(f for f in d.glob("*.json") if f.is_file())
    if not files:
        raise UserError(f"{d}: no judge output files (*.json)")
    problems: list[str] = []
    out: dict[str, dict[str, Label]] = {}
    for f in files:
        try:
            out[f.name] = file_predictions(f, lenient=lenient)
        except UserError as e:
            problems.extend(e.problems)
    if problems:
        raise UserError(problems)
    return fill_missing(out)


# ---------------------------------------------------------------------------------------------
# tables


def consensus(preds: Mapping[str, Mapping[str, Label]]) -> dict[str, Label]:
    """Labels on which every file gives the same answer (missing counts as ``M``), ordered by answer then label."""
    full = fill_missing(preds)
    if not full:
        return {}
    files = list(full.values())
    agreed: dict[str, Label] = {}
    for lab in files[0]:
        answers = {p[lab] for p in files}
        if len(answers) == 1:
            agreed[lab] = answers.pop()
    return dict(sorted(agreed.items(), key=lambda kv: kv[1]))  # stable: label order kept within an answer


def _tsv(rows: Iterable[list[str]]) -> str:
    buf = pyio.StringIO()
    writer = csv.writer(buf, delimiter="\t")  # the original's writer: CRLF line ends, minimal quoting
    writer.writerows(rows)
    return buf.getvalue()


def render_combined_tsv(preds: Mapping[str, Mapping[str, Label]]) -> str:
    full = fill_missing(preds)
    names = list(full)
    labels = list(next(iter(full.values()))) if full else []
    return _tsv([["Label", *names], *([lab, *(full[n][lab] for n in names)] for lab in labels)])


def render_consensus_tsv(preds: Mapping[str, Mapping[str, Label]]) -> str:
    agreed = consensus(preds)
    counts = {k: sum(1 for v in agreed.values() if v == k) for k in LABELS}
    rows = [["Prediction", "Count"], *([k, str(counts[k])] for k in LABELS), ["Filename", "Consensus Prediction"]]
    rows += [[lab, v] for lab, v in agreed.items()]
    return _tsv(rows)


def write_combined_tsv(path: str | Path, preds: Mapping[str, Mapping[str, Label]]) -> Path:
    """Atomically write ``combined_predictions.tsv`` exactly as the original (see the module docstring)."""
    with io.atomic_write(path) as fh:
        fh.write(render_combined_tsv(preds))
    return Path(path)


def write_consensus_tsv(path: str | Path, preds: Mapping[str, Mapping[str, Label]]) -> Path:
    """Atomically write ``consensus_predictions.tsv`` exactly as the original (see the module docstring)."""
    with io.atomic_write(path) as fh:
        fh.write(render_consensus_tsv(preds))
    return Path(path)


def _tsv_rows(path: Path) -> list[list[str]]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    try:
        s = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if not s.strip():
        raise UserError(f"{path}: empty file, expected a TSV table")
    return [row for row in csv.reader(pyio.StringIO(s, newline=""), delimiter="\t") if row]


def _combined(path: Path) -> tuple[dict[str, dict[str, Label]], list[str]]:
    rows = _tsv_rows(path)
    problems: list[str] = []
    head = rows[0]
    if head[0] != "Label" or len(head) < 2:
        return {}, [f"{where(path, 1)}: expected a header 'Label<TAB><file>...'"]
    names = head[1:]
    preds: dict[str, dict[str, Label]] = {n: {} for n in names}
    for i, row in enumerate(rows[1:], start=2):
        if len(row) != len(head):
            problems.append(f"{where(path, i)}: {len(row)} columns, expected {len(head)}")
            continue
        for n, cell in zip(names, row[1:], strict=True):
            if cell == "":
                continue
            if cell not in LABELS:
                problems.append(f"{where(path, i, n)}: {cell!r} is not A, B or M")
                continue
            preds[n][row[0]] = cell  # type: ignore[assignment]
    return preds, problems


def read_combined_tsv(path: str | Path) -> dict[str, dict[str, Label]]:
    """``{file name: {label: A|B|M}}`` from a ``combined_predictions.tsv``."""
    preds, problems = _combined(Path(path))
    if problems:
        raise UserError(problems)
    return preds


def check_combined_tsv(path: str | Path) -> tuple[list[str], int]:
    preds, problems = _combined(Path(path))
    return problems, len(set().union(*(p.keys() for p in preds.values()))) if preds else 0


def _consensus(path: Path) -> tuple[dict[str, int], dict[str, Label], list[str]]:
    rows = _tsv_rows(path)
    problems: list[str] = []
    if rows[0] != ["Prediction", "Count"]:
        return {}, {}, [f"{where(path, 1)}: expected a header 'Prediction<TAB>Count'"]
    counts: dict[str, int] = {}
    for i, row in enumerate(rows[1:4], start=2):
        if len(row) != 2 or row[0] != LABELS[i - 2] or not row[1].isdigit():
            problems.append(f"{where(path, i)}: expected '{LABELS[i - 2]}<TAB><count>'")
        else:
            counts[row[0]] = int(row[1])
    if len(rows) < 5 or rows[4] != ["Filename", "Consensus Prediction"]:
        problems.append(f"{where(path, 5)}: expected a header 'Filename<TAB>Consensus Prediction'")
        return counts, {}, problems
    agreed: dict[str, Label] = {}
    for i, row in enumerate(rows[5:], start=6):
        if len(row) != 2 or row[1] not in LABELS:
            problems.append(f"{where(path, i)}: expected '<file name><TAB>A|B|M'")
        else:
            agreed[row[0]] = row[1]  # type: ignore[assignment]
    if len(counts) == len(LABELS):
        for k in LABELS:
            n = sum(1 for v in agreed.values() if v == k)
            if counts.get(k) != n:
                problems.append(f"{where(path, 2 + LABELS.index(k), k)}: count {counts.get(k)} but {n} rows say {k}")
    return counts, agreed, problems


def read_consensus_tsv(path: str | Path) -> tuple[dict[str, int], dict[str, Label]]:
    """``({A: n, B: n, M: n}, {label: A|B|M})`` from a ``consensus_predictions.tsv``."""
    counts, agreed, problems = _consensus(Path(path))
    if problems:
        raise UserError(problems)
    return counts, agreed


def check_consensus_tsv(path: str | Path) -> tuple[list[str], int]:
    _, agreed, problems = _consensus(Path(path))
    return problems, len(agreed)

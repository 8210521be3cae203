"""Agreement between two annotation runs (two annotators, or one annotator twice).

Both files are annotated Dialog JSONL. Dialogs are matched by id and turns by position (a dialog
whose turn count or roles differ between the runs is skipped and counted). For every role (user
``state``, assistant ``action``) and field (motivation, emotion, topics):

* closed sets (fields named with ``closed``): Cohen's kappa, plus exact agreement;
* open vocabulary: exact match (after case and spacing are normalised) and a fuzzy score, the mean
  ``difflib`` ratio of the two labels (for topics, the mean token Jaccard of the two topic lists).

Turns where either run has no value for a field are left out of that field's numbers and counted.

The stage has the one shape (:mod:`sage_dialog.stages.base`): :class:`Settings`, :class:`Inputs` (the
two runs), :class:`Result` (the report) and :func:`run`; ``sage-dialog agreement`` runs it from an
:class:`AgreementConfig` (the settings plus the two files and the report file).
"""

from __future__ import annotations

import difflib
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from sage_dialog.core.errors import UserError
from sage_dialog.core.io import read_jsonl, write_json
from sage_dialog.core.schema import Dialog, Tags
from sage_dialog.stages.base import StageResult, StageSettings

ROLES = ("user", "assistant")
FIELDS = ("motivation", "emotion", "topics")


def _norm(s: str) -> str:
    return " ".join(s.casefold().replace("_", " ").replace("-", " ").split())


def cohen_kappa(a: Sequence[str], b: Sequence[str]) -> float | None:
    """Cohen's kappa of two label sequences (None when undefined: both raters always give one label)."""
    if len(a) != len(b):
        raise ValueError("label sequences differ in length")
    n = len(a)
    if n == 0:
        return None
    po = sum(x == y for x, y in zip(a, b, strict=True)) / n
    ca, cb = Counter(a), Counter(b)
    pe = sum(ca[k] * cb[k] for k in ca) / (n * n)
    if pe == 1.0:
        return None
    return (po - pe) / (1 - pe)


def token_jaccard(a: Iterable[str], b: Iterable[str]) -> float:
    """Jaccard similarity of the word tokens of two lists of phrases (1.0 for two empty lists)."""
    ta = {w for x in a for w in _norm(x).split()}
    tb = {w for x in b for w in _norm(x).split()}
    if not ta and not tb:
        return 1.0
    return len(ta & tb) / len(ta | tb)


def fuzzy_ratio(a: str, b: str) -> float:
    """``difflib`` similarity of two labels after normalisation (0..1)."""
    return difflib.SequenceMatcher(None, _norm(a), _norm(b)).ratio()


def _tags(d: Dialog) -> list[tuple[str, Tags | None]]:
    return [(t.role, t.state if t.role == "user" else t.action) for t in d.turns]


class Settings(StageSettings):
    """The ``agreement`` stage: which fields are closed sets."""

    closed: list[str] = Field(default_factory=list, description="score FIELD or ROLE.FIELD as a closed set with "
                              "Cohen's kappa (repeatable)")


class _AgreementPaths(BaseModel):
    a: Path = Field(description="first annotated Dialog JSONL")
    b: Path = Field(description="second annotated Dialog JSONL")


class AgreementConfig(Settings, _AgreementPaths):  # the runs' fields come first (pydantic orders fields by the bases)
    """``sage-dialog agreement``: the settings plus the two runs and the report file."""

    output: Path | None = Field(None, description="also write the report as JSON")


@dataclass
class Inputs:
    """The two annotation runs (annotated Dialog JSONL)."""

    a: Path
    b: Path


class Result(StageResult):
    """``report``: the JSON-ready report (:func:`render` shows it). Counts: dialogs_a, dialogs_b, matched,
    skipped_mismatched_turns. Quality: ``<role>.<field> exact`` / ``kappa`` / ``fuzzy`` where defined."""

    report: dict[str, Any]


def _closed_keys(closed: Sequence[str]) -> set[str]:
    out: set[str] = set()
    for key in closed:
        role, dot, fld = key.rpartition(".")
        fld = "topics" if fld == "topic" else fld
        if fld not in FIELDS or (dot and role not in ROLES):
            raise UserError(f"--closed {key!r}: expected FIELD or ROLE.FIELD with FIELD in {', '.join(FIELDS)} "
                            f"and ROLE in {', '.join(ROLES)}")
        out.update(f"{r}.{fld}" for r in ((role,) if dot else ROLES))
    return out


def compare(a: Iterable[Dialog], b: Iterable[Dialog], *, closed: Sequence[str] = ()) -> dict[str, Any]:
    """Per-field agreement between two runs (see the module docstring); a JSON-ready report."""
    closed_keys = _closed_keys(closed)
    by_id = {d.id: d for d in b}
    pairs: dict[str, list[tuple[Any, Any]]] = {f"{r}.{f}": [] for r in ROLES for f in FIELDS}
    missing: Counter[str] = Counter()
    n_a = matched = mismatched = 0
    for da in a:
        n_a += 1
        db = by_id.get(da.id)
        if db is None:
            continue
        ta, tb = _tags(da), _tags(db)
        if [r for r, _ in ta] != [r for r, _ in tb]:
            mismatched += 1
            continue
        matched += 1
        for (role, x), (_, y) in zip(ta, tb, strict=True):
            if role not in ROLES:
                continue
            for f in FIELDS:
                key = f"{role}.{f}"
                vx = getattr(x, f) if x else None
                vy = getattr(y, f) if y else None
                if vx is None or vy is None:
                    missing[key] += 1
                else:
                    pairs[key].append((vx, vy))
    if matched == 0:
        raise UserError("no dialog is in both runs with the same turns (dialogs are matched by id)")
    fields: dict[str, Any] = {}
    for key, ps in pairs.items():
        if not ps and not missing[key]:
            continue
        row: dict[str, Any] = {"kind": "closed" if key in closed_keys else "open", "n": len(ps),
                               "missing": missing[key]}
        if key.endswith(".topics"):
            sa = [sorted({_norm(t) for t in x}) for x, _ in ps]
            sb = [sorted({_norm(t) for t in y}) for _, y in ps]
            row["exact"] = _mean([x == y for x, y in zip(sa, sb, strict=True)])
            row["fuzzy"] = _mean([token_jaccard(x, y) for x, y in ps])
            if key in closed_keys:
                # topics are multi-label: kappa over (turn, label) membership decisions
                labels = sorted({t for s in sa + sb for t in s})
                ma = [str(t in s) for s in sa for t in labels]
                mb = [str(t in s) for s in sb for t in labels]
                row["kappa"] = cohen_kappa(ma, mb)
        else:
            la, lb = [_norm(x) for x, _ in ps], [_norm(y) for _, y in ps]
            row["exact"] = _mean([x == y for x, y in zip(la, lb, strict=True)])
            row["fuzzy"] = _mean([fuzzy_ratio(x, y) for x, y in ps])
            if key in closed_keys:
                row["kappa"] = cohen_kappa(la, lb)
                row["labels"] = len(set(la) | set(lb))
        fields[key] = row
    return {"dialogs_a": n_a, "dialogs_b": len(by_id), "matched": matched, "skipped_mismatched_turns": mismatched,
            "fields": fields}


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def render(report: dict[str, Any]) -> str:
    """The report as a small table."""
    def fmt(x: float | None) -> str:
        return "   -" if x is None else f"{x:.3f}"

    lines = [f"matched {report['matched']} dialogs (A {report['dialogs_a']}, B {report['dialogs_b']}, "
             f"skipped {report['skipped_mismatched_turns']} with different turns)",
             f"{'field':22} {'kind':6} {'n':>6} {'exact':>6} {'kappa':>6} {'fuzzy':>6}"]
    for key, r in report["fields"].items():
        lines.append(f"{key:22} {r['kind']:6} {r['n']:6d} {fmt(r['exact']):>6} {fmt(r.get('kappa')):>6} {fmt(r['fuzzy']):>6}")
    return "\n".join(lines)


def run(settings: Settings, *, inputs: Inputs, out: Path | None = None) -> Result:
    """Compare two annotated files; write the JSON report to ``out`` when given; return it."""
    from sage_dialog.core.io import check_paths

    check_paths(inputs=[inputs.a, inputs.b], files=[out])
    t0 = time.perf_counter()
    report = compare(read_jsonl(inputs.a, Dialog), read_jsonl(inputs.b, Dialog), closed=settings.closed)
    report = {"a": str(inputs.a), "b": str(inputs.b), **report}
    if out is not None:
        write_json(out, report)
    quality: dict[str, int | float | None] = {f"{key} {m}": row.get(m) for key, row in report["fields"].items()
                                              for m in ("exact", "kappa", "fuzzy") if m in row}
    counts = {k: report[k] for k in ("dialogs_a", "dialogs_b", "matched", "skipped_mismatched_turns")}
    return Result(report=report, outputs={"report": out} if out is not None else {}, counts=counts, quality=quality,
                  seconds=time.perf_counter() - t0)

"""On fixed judge answers, our TSVs and consensus counts equal the original SAGE analysis.

``reference_analysis`` below is an independent implementation of the original rule as FORMATS.md
section 6 states it (and as the original script behaves): labels are the union over all ``.json``
files of the folder, sorted; a file's answer for a label is its first item with that label; an
answer counts only if it *starts* with ``Dialog X is better`` (case-sensitive), else ``M``; files
whose name contains ``rev`` are flipped A<->B; a label missing from a file is ``M``. Consensus keeps
the labels on which every file agrees; counts are listed A, B, M, then the agreed labels sorted by
prediction (then label). Both TSVs are written by Python's csv module with tab delimiters.
"""

from __future__ import annotations

import csv
import io as pyio
import json
import re
from pathlib import Path

import pytest

from sage_dialog.cli import main


def reference_analysis(folder: Path) -> tuple[str, str, dict[str, int]]:
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".json"))
    data = {n: json.loads((folder / n).read_text(encoding="utf-8")) for n in names}
    labels = sorted({item["label"] for n in names for item in data[n]})
    answer_re = re.compile(r"Dialog ([AB]) is better")
    table: dict[str, dict[str, str]] = {}
    for n in names:
        col = {}
        for label in labels:
            first = next((item for item in data[n] if item["label"] == label), None)
            letter = "M"
            if first is not None:
                m = answer_re.match(first["predict"])
                if m:
                    letter = m.group(1)
                    if "rev" in n:
                        letter = "B" if letter == "A" else "A"
            col[label] = letter
        table[n] = col
    buf = pyio.StringIO(newline="")
    w = csv.writer(buf, delimiter="\t")
    w.writerow(["Label", *names])
    for label in labels:
        w.writerow([label, *(table[n][label] for n in names)])
    combined = buf.getvalue()
    agreed = {}
    for label in labels:
        letters = {table[n][label] for n in names}
        if len(letters) == 1:
            agreed[label] = letters.pop()
    counts = {"A": 0, "B": 0, "M": 0}
    for letter in agreed.values():
        counts[letter] += 1
    buf = pyio.StringIO(newline="")
    w = csv.writer(buf, delimiter="\t")
    w.writerow(["Prediction", "Count"])
    for k in ("A", "B", "M"):
        w.writerow([k, counts[k]])
    w.writerow(["Filename", "Consensus Prediction"])
    for label, letter in sorted(agreed.items(), key=lambda kv: (kv[1], kv[0])):
        w.writerow([label, letter])
    return combined, buf.getvalue(), counts


def _write(folder: Path, name: str, items: list[tuple[str, str]]) -> None:
    (folder / name).write_text(json.dumps([{"label": lab, "predict": p} for lab, p in items]), encoding="utf-8")


@pytest.fixture
def judge_folder(tmp_path: Path) -> Path:
    """Two judges x two orders over 8 transcripts, with the awkward cases of real judge output."""
    d = tmp_path / "judge_out"
    d.mkdir()
    L = [f"I_failed_my_test_{i}.txt" for i in range(8)]
    _write(d, "gpt4_judge.json", [
        (L[0], "Dialog A is better"), (L[1], "Dialog B is better"), (L[2], "Dialog A is better, because it listens."),
        (L[3], "Tie"), (L[4], " Dialog A is better"),  # leading space: the original's re.match says M
        (L[5], "dialog a is better"),                   # lower case: M
        (L[6], "Dialog B is better"), (L[7], "Dialog A is better. Then again, Dialog B is better."),
    ])
    _write(d, "gpt4_judge_rev.json", [
        (L[0], "Dialog B is better"), (L[1], "Dialog A is better"), (L[2], "Dialog B is better"),
        (L[3], "Tie"), (L[4], "I cannot tell"), (L[5], "Dialog A is better"),
        (L[6], "Dialog B is better"),                   # position bias: flips to A after un-swapping
        # L[7] missing: M
    ])
    _write(d, "llama_judge.json", [
        (L[0], "Dialog A is better"), (L[1], "Dialog B is better"), (L[2], "Dialog A is better"),
        (L[3], "Both are fine"), (L[4], "Dialog B is better"), (L[5], "Dialog B is better"),
        (L[6], "Dialog B is better"), (L[7], "Dialog A is better"),
    ])
    _write(d, "llama_judge_rev.json", [
        (L[0], "Dialog B is better"), (L[1], "Dialog A is better"), (L[2], "Dialog B is better\nReason: ..."),
        (L[3], "M"), (L[4], "Dialog A is better"), (L[5], "Dialog A is better"),
        (L[6], "Dialog A is better"), (L[7], "Dialog B is better"),
    ])
    (d / "notes.txt").write_text("not a judge file")
    return d


def test_tsvs_and_consensus_equal_the_original_analysis(judge_folder: Path, tmp_path: Path) -> None:
    combined, consensus, counts = reference_analysis(judge_folder)
    assert counts == {"A": 2, "B": 1, "M": 1}  # the fixture exercises every outcome
    out = tmp_path / "analysis"
    assert main(["compare", "--judgements", str(judge_folder), "-o", str(out)]) == 0
    assert (out / "combined_predictions.tsv").read_bytes() == combined.encode()
    assert (out / "consensus_predictions.tsv").read_bytes() == consensus.encode()
    summary = json.loads((out / "summary.json").read_text())
    (pair,) = [p for p in summary["pairs"] if p["unit"] == "dialog"]
    c = pair["consensus"]
    assert (c["A"], c["B"], c["M"], c["labels"]) == (counts["A"], counts["B"], counts["M"], 8)
    assert (out / "report.html").is_file() and (out / "report.md").is_file()


def test_our_own_run_writes_original_files_the_original_analysis_agrees_with(tmp_path: Path) -> None:
    from sage_dialog.core.schema import Dialog, Turn
    from sage_dialog.sandbox.oracles import oracle_for
    from sage_dialog.stages.compare.compare import run_compare

    seeds = ["I lost my job today and I feel lost.", "My sister is getting married next week!",
             "I failed my driving test again."]
    replies = {"warm": "I am so sorry, that sounds hard. Do you want to talk about it?", "cold": "Ok."}
    dialogs = {m: [Dialog(id=f"{m}-{i}", turns=[Turn(role="user", text=s), Turn(role="assistant", text=r)],
                          meta={"seed": s}) for i, s in enumerate(seeds)] for m, r in replies.items()}
    rep = run_compare(dialogs, [oracle_for("pairwise")], tmp_path / "out", n_boot=200, progress=False)
    folder = tmp_path / "out" / "judgements" / "warm__vs__cold"
    combined, consensus, counts = reference_analysis(folder)
    assert (folder / "combined_predictions.tsv").read_bytes() == combined.encode()
    assert (folder / "consensus_predictions.tsv").read_bytes() == consensus.encode()
    c = rep.pair("warm", "cold").consensus
    assert (counts["A"], counts["B"], counts["M"]) == (c.A, c.B, c.M)
    assert sorted(p.name for p in folder.glob("*.json")) == ["oracle-pairwise.json", "oracle-pairwise_rev.json"]


def test_bad_judgement_folder_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "bad"
    d.mkdir()
    (d / "j.json").write_text(json.dumps([{"label": "x.txt"}]))
    assert main(["compare", "--judgements", str(d), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "j.json" in err and "predict" in err
    assert not (tmp_path / "o" / "combined_predictions.tsv").exists()
    # a label answered twice in one file is refused (the original silently took the first answer)
    (d / "j.json").write_text(json.dumps([{"label": "x.txt", "predict": "Dialog A is better"},
                                          {"label": "x.txt", "predict": "Dialog B is better"}]))
    assert main(["compare", "--judgements", str(d), "-o", str(tmp_path / "o")]) == 2
    assert "duplicate label" in capsys.readouterr().err
    assert main(["compare", "--judgements", str(tmp_path / "nowhere"), "-o", str(tmp_path / "o")]) == 2

"""Agreement between annotation runs: known-answer kappa, fuzzy scores, the report and command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sage_dialog.cli import main
from sage_dialog.core.io import write_jsonl
from sage_dialog.core.schema import Dialog, Tags, Turn
from sage_dialog.stages.agreement import cohen_kappa, compare, fuzzy_ratio, token_jaccard


def test_cohen_kappa_known_answer() -> None:
    # Wikipedia's worked example: 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no -> po 0.7, pe 0.5, kappa 0.4
    a = ["y"] * 25 + ["n"] * 25
    b = ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa(["x", "y", "z"], ["x", "y", "z"]) == pytest.approx(1.0)
    assert cohen_kappa(["x", "y"], ["y", "x"]) == pytest.approx(-1.0)
    assert cohen_kappa(["x", "x"], ["x", "x"]) is None  # undefined, not a made-up number


def test_fuzzy_scores() -> None:
    assert token_jaccard(["job interview"], ["interview", "family"]) == pytest.approx(1 / 3)
    assert token_jaccard([], []) == 1.0
    assert fuzzy_ratio("Sharing News", "sharing_news") == 1.0
    assert 0.5 < fuzzy_ratio("reassurance", "reassuring") < 1.0


def ann(id_: str, user: list[tuple[str, str, list[str]]], asst: list[tuple[str, str, list[str]]]) -> Dialog:
    turns = []
    for (um, ue, ut), (am, ae, at) in zip(user, asst, strict=True):
        turns.append(Turn(role="user", text="u", state=Tags(motivation=um, emotion=ue, topics=ut)))
        turns.append(Turn(role="assistant", text="a", action=Tags(motivation=am, emotion=ae, topics=at)))
    return Dialog(id=id_, turns=turns)


def test_compare_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = [ann("d1", [("venting", "sad", ["job"]), ("asking", "anxious", ["money"])],
             [("Question", "calm", ["job"]), ("Information", "calm", ["money", "rent"])]),
         ann("d2", [("sharing news", "happy", ["exam"])], [("Affirmation and Reassurance", "warm", ["exam"])]),
         ann("only_a", [("x", "y", [])], [("Question", "y", [])])]
    b = [ann("d1", [("Venting", "sad", ["job"]), ("asking for help", "worried", ["money"])],
             [("Question", "calm", ["job"]), ("Question", "calm", ["rent", "money"])]),
         ann("d2", [("sharing_news", "happy", ["exams"])], [("Affirmation and Reassurance", "warm", ["exam"])]),
         Dialog(id="d3", turns=[Turn(role="user", text="u")])]
    rep = compare(a, b, closed=["assistant.motivation"])
    assert rep["matched"] == 2 and rep["dialogs_a"] == 3
    f = rep["fields"]
    am = f["assistant.motivation"]
    assert am["kind"] == "closed" and am["n"] == 3 and am["exact"] == pytest.approx(2 / 3)
    # labels A: Q, I, AR; B: Q, Q, AR -> po 2/3, pe (1*2 + 1*1)/9 = 1/3 -> kappa 0.5
    assert am["kappa"] == pytest.approx(0.5)
    um = f["user.motivation"]
    assert um["kind"] == "open" and "kappa" not in um
    assert um["exact"] == pytest.approx(2 / 3)  # case and underscores do not count as disagreement
    assert 0.5 < um["fuzzy"] < 1.0
    assert f["user.emotion"]["exact"] == pytest.approx(2 / 3)
    assert f["assistant.topics"]["exact"] == 1.0  # order of topics does not matter
    assert f["user.topics"]["exact"] == pytest.approx(2 / 3) and f["user.topics"]["fuzzy"] == pytest.approx(2 / 3)

    fa, fb, out = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "rep.json"
    write_jsonl(fa, a)
    write_jsonl(fb, b)
    assert main(["agreement", str(fa), str(fb), "--closed", "assistant.motivation", "-o", str(out)]) == 0
    table = capsys.readouterr().out
    assert "assistant.motivation" in table and "0.500" in table
    assert json.loads(out.read_text())["fields"]["assistant.motivation"]["kappa"] == pytest.approx(0.5)
    assert main(["agreement", str(fa), str(fb), "--closed", "mood"]) == 2
    assert "--closed 'mood'" in capsys.readouterr().err
    write_jsonl(tmp_path / "c.jsonl", [Dialog(id="zzz", turns=[Turn(role="user", text="u")])])
    assert main(["agreement", str(fa), str(tmp_path / "c.jsonl")]) == 2
    assert "no dialog is in both runs" in capsys.readouterr().err

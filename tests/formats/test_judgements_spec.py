"""Judgement files of the original scripts and data_spec.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sage_dialog.core.errors import UserError
from sage_dialog.formats import check_file, data_spec, detect_format, judgements

J = Path(__file__).parent / "fixtures" / "judgements"


@pytest.mark.parametrize("text,want,lenient_want", [
    ("Dialog A is better.", "A", "A"), ("I think dialog b is better", "M", "B"), ("Dialog  A  is  better", "M", "A"),
    ("Both are good", "M", "M"), ("Dialog A is better... no, Dialog B is better", "A", "M"), ("", "M", "M"),
    ("Dialog C is better", "M", "M"), (" Dialog B is better", "M", "B"),
])
def test_parse_answer(text: str, want: str, lenient_want: str) -> None:
    assert judgements.parse_answer(text) == want  # the original: re.match at the start, case-sensitive
    assert judgements.parse_answer(text, lenient=True) == lenient_want


def test_rev_files_are_flipped() -> None:
    preds = judgements.read_judgement_dir(J / "outputs")
    assert list(preds) == ["judgement_base_vs_sage.judge.json", "judgement_base_vs_sage.rev.judge.json"]
    # flipped back; e.txt is missing from the rev file, so it is M there (the original rule)
    assert preds["judgement_base_vs_sage.rev.judge.json"] == {"a.txt": "A", "b.txt": "B", "c.txt": "M", "d.txt": "A",
                                                              "e.txt": "M"}
    assert preds["judgement_base_vs_sage.judge.json"]["e.txt"] == "A"  # only the start of the answer counts
    lenient = judgements.read_judgement_dir(J / "outputs", lenient=True)
    assert lenient["judgement_base_vs_sage.judge.json"]["d.txt"] == "B"


def test_tables_match_the_crafted_files(tmp_path: Path) -> None:
    preds = judgements.read_judgement_dir(J / "outputs")
    comb = judgements.write_combined_tsv(tmp_path / "combined_predictions.tsv", preds)
    cons = judgements.write_consensus_tsv(tmp_path / "consensus_predictions.tsv", preds)
    assert comb.read_bytes() == (J / "combined_predictions.tsv").read_bytes()
    assert cons.read_bytes() == (J / "consensus_predictions.tsv").read_bytes()
    assert judgements.read_combined_tsv(comb) == preds
    counts, agreed = judgements.read_consensus_tsv(cons)
    assert counts == {"A": 1, "B": 1, "M": 1} and agreed == {"a.txt": "A", "b.txt": "B", "c.txt": "M"}
    assert detect_format(comb) == "combined-tsv" and detect_format(cons) == "consensus-tsv"
    assert check_file(cons) == ("consensus-tsv", [], 3)


def test_judge_files_round_trip(tmp_path: Path) -> None:
    items = judgements.read_judge_input(J / "input.json")
    assert items[0].output == "I_failed_my_driving_test_again..txt"
    judgements.write_judge_input(tmp_path / "in.json", items)
    assert (tmp_path / "in.json").read_bytes() == (J / "input.json").read_bytes()
    src = J / "outputs" / "judgement_base_vs_sage.judge.json"
    outs = judgements.read_judge_output(src)
    judgements.write_judge_output(tmp_path / "out.json", outs)
    assert (tmp_path / "out.json").read_bytes() == src.read_bytes()
    assert detect_format(J / "input.json") == "judge-input" and detect_format(src) == "judge-output"


_lab = st.sampled_from(["A", "B", "M"])


@settings(max_examples=80, deadline=None)
@given(st.dictionaries(st.sampled_from(["f1.json", "f2.rev.json", "f3.json"]),
                       st.dictionaries(st.sampled_from([f"s{i}.txt" for i in range(6)]), _lab), min_size=1))
def test_tables_round_trip_property(preds: dict[str, dict[str, judgements.Label]]) -> None:
    if not any(preds.values()):
        return
    import tempfile

    full = judgements.fill_missing(preds)
    with tempfile.TemporaryDirectory() as d:
        comb = judgements.write_combined_tsv(Path(d) / "c.tsv", preds)
        assert comb.read_bytes().count(b"\r\n") == 1 + len(next(iter(full.values())))
        assert judgements.read_combined_tsv(comb) == full
        cons = judgements.write_consensus_tsv(Path(d) / "k.tsv", preds)
        counts, agreed = judgements.read_consensus_tsv(cons)
    assert agreed == judgements.consensus(preds)
    assert sum(counts.values()) == len(agreed)
    for lab, v in agreed.items():
        assert all(p[lab] == v for p in full.values())
    assert [v for v in agreed.values()] == sorted(agreed.values())  # ordered by prediction
    disagreed = set(next(iter(full.values()))) - set(agreed)
    assert all(len({p[lab] for p in full.values()}) > 1 for lab in disagreed)


def test_duplicate_label_and_bad_shape_reported(tmp_path: Path) -> None:
    p = tmp_path / "o.json"
    p.write_text(json.dumps([{"label": "a", "predict": "x"}, {"label": "a", "predict": "y"}, {"label": 3}]))
    problems, n = judgements.check_judge_output(p)
    assert n == 3
    assert problems == [
        f"{p}: record 2: field label: duplicate label 'a' (first in record 1)",
        f"{p}: record 3: field predict: missing",
        f"{p}: record 3: field label: expected a string, got int",
    ]
    with pytest.raises(UserError):
        judgements.read_judgement_dir(tmp_path)


def test_data_spec(tmp_path: Path) -> None:
    (tmp_path / "data1.json").write_text("[]")
    spec_path = tmp_path / "data_spec.json"
    spec_path.write_text(json.dumps({"data1.json": {"prompt": "", "size": 2}, "data2.json": {"size": -1, "x": 1}}))
    problems, n = data_spec.check_data_spec(spec_path)
    assert n == 2
    assert problems == [
        f"{spec_path}: record data2.json: field size: Input should be greater than or equal to 0",
        f"{spec_path}: record data2.json: field x: Extra inputs are not permitted",
    ]
    spec = {"data1.json": data_spec.DataSpecEntry(prompt="Be kind. ", size=2)}
    data_spec.write_data_spec(spec_path, spec)
    assert data_spec.read_data_spec(spec_path) == spec
    assert check_file(spec_path) == ("data-spec", [], 1)
    spec_path.write_text(json.dumps({"missing.json": {"size": 1}}))
    assert check_file(spec_path)[1] == [f"{spec_path}: record missing.json: field file: no such file "
                                        f"{str(tmp_path / 'missing.json')!r}"]

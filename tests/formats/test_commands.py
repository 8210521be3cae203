"""The convert / chain / validate commands through the real CLI entry point."""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest

from sage_dialog.cli import main
from sage_dialog.core.outputs import MARKER
from sage_dialog.formats import read_records

FIX = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("cmd", ["convert", "chain", "validate"])
def test_help_has_an_example(cmd: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "Example:" in out and f"sage-dialog {cmd} " in out


def test_validate_ok_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(FIX / "annotated.json")]) == 0
    assert capsys.readouterr().out == f"OK: {FIX / 'annotated.json'}: sharegpt, 2 records\n"
    assert main(["validate", str(FIX / "transcripts" / "plain" / "full"), "--format", "transcripts-full"]) == 0
    assert main(["validate", str(FIX / "prefs" / "trl.jsonl")]) == 0
    assert "prefs-trl, 2 records" in capsys.readouterr().out


def test_validate_with_forced_style_lists_every_problem(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(FIX / "raw.json"), "--format", "sharegpt-annotated"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 7  # every turn of both dialogs lacks its tag block
    assert err[0].endswith("record 1 (identity_1): field conversations[0].value: expected one "
                           "{motivation, emotion, topic} tag block in an annotated file, found none")


def test_chain_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "chained.json"
    assert main(["chain", str(FIX / "annotated.json"), str(out)]) == 0
    assert out.read_bytes() == (FIX / "chained.json").read_bytes()
    # JSONL in, JSONL out
    jl = tmp_path / "ann.jsonl"
    assert main(["convert", str(FIX / "annotated.json"), str(jl)]) == 0
    assert main(["chain", str(jl), str(tmp_path / "sac.jsonl")]) == 0
    assert main(["convert", str(tmp_path / "sac.jsonl"), str(tmp_path / "sac.json")]) == 0
    assert (tmp_path / "sac.json").read_bytes() == (FIX / "chained.json").read_bytes()


def test_chain_refuses_unannotated_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x.json"
    assert main(["chain", str(FIX / "chained.json"), str(out)]) == 2
    err = capsys.readouterr().err
    assert "found 2 (state, action)" in err and "Traceback" not in err
    assert not out.exists()


def test_convert_chain_of_formats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trl = tmp_path / "sft.jsonl"
    assert main(["convert", str(FIX / "chained.json"), str(trl), "--to", "trl-sft"]) == 0
    row = json.loads(trl.read_text().splitlines()[0])
    assert row["messages"][1]["content"].startswith("{u_motivation: sharing news")
    tdir = tmp_path / "tr"
    assert main(["convert", str(trl), str(tdir), "--to", "transcripts"]) == 0
    assert sorted(p.name for p in tdir.iterdir() if p.name != MARKER) == ["I_failed_my_driving_test_again..txt", "I_got_the_job!.txt"]
    conv = tmp_path / "conv"
    assert main(["convert", str(tdir), str(conv), "--to", "transcripts-converted"]) == 0
    assert (conv / "I_failed_my_driving_test_again..txt").read_text(encoding="utf-8").startswith(
        "user: I failed my driving test again.\nassistant: That's rough. Third time? 🚗\n")
    lf = tmp_path / "lf"
    assert main(["convert", str(trl), str(lf), "--to", "llamafactory-sft"]) == 0
    assert "wrote 2 records to" in capsys.readouterr().err
    assert main(["convert", "--list"]) == 0
    assert "prefs-llamafactory" in capsys.readouterr().out


def test_convert_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["convert", str(FIX / "chained.json"), str(tmp_path / "x.bin")]) == 2
    assert "give --to" in capsys.readouterr().err
    assert main(["convert", str(FIX / "chained.json"), str(FIX / "chained.json")]) == 2
    assert "overwrite the input" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "nope.json"), str(tmp_path / "y.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["convert", str(FIX / "chained.json"), str(tmp_path / "y.jsonl"), "--to", "nope"]) == 2
    assert "unknown format 'nope'" in capsys.readouterr().err


def test_jsonl_inputs_are_streamed(tmp_path: Path) -> None:
    """The first records come out before a broken later line is even read."""
    good = json.dumps({"kind": "dialog", "id": "d1", "turns": [{"role": "user", "text": "hi"}]})
    p = tmp_path / "d.jsonl"
    p.write_text(good + "\n" + good.replace("d1", "d2") + "\n{broken\n")
    it = read_records(p)
    assert isinstance(it, types.GeneratorType)
    assert next(iter(it)).id == "d1"


def test_chain_warns_about_untagged_dialogs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    jl = tmp_path / "raw.jsonl"
    assert main(["convert", str(FIX / "raw.json"), str(jl)]) == 0
    assert main(["chain", str(jl), str(tmp_path / "c.jsonl")]) == 0
    err = capsys.readouterr().err
    # raw dialogs carry no tags at all: chaining keeps them plain and says so, naming them
    assert "warning: " in err and "2 of 2 dialogs carry no tags and stay plain (identity_1, identity_2)" in err

"""`sage-dialog prefs` on original transcript folders and on search trees, through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

from sage_dialog.cli import main
from sage_dialog.core.io import write_jsonl

from .test_prefs_trees import _tree

FIX = Path(__file__).parent / "fixtures"


def test_transcript_folder_gives_what_the_original_comparison_builder_gives(tmp_path: Path) -> None:
    out = tmp_path / "pairs.json"
    rc = main(["prefs", str(FIX / "search"), "--format", "sage-comparison", "--negatives", "1", "-o", str(out)])
    assert rc == 0
    assert json.loads(out.read_text()) == json.loads((FIX / "expected_comparison_k1.json").read_text())


def test_all_negatives_and_every_trainer_format(tmp_path: Path) -> None:
    out = tmp_path / "pairs.json"
    assert main(["prefs", str(FIX / "search"), "--format", "sage-comparison", "-o", str(out)]) == 0
    records = json.loads(out.read_text())
    assert [r["output"][1].split("} ")[-1] for r in records] == [
        "Haha, roads are overrated anyway!", "Practice more.", "Give up."]
    assert main(["prefs", str(FIX / "search"), "--format", "trl", "-o", str(tmp_path / "p.trl.jsonl")]) == 0
    rows = [json.loads(x) for x in (tmp_path / "p.trl.jsonl").read_text().splitlines()]
    assert rows[2]["prompt"][-1] == {"role": "user", "content": "Yes, the third. What should I do?"}
    assert rows[2]["rejected"][0]["content"].endswith("Give up.")
    lf = tmp_path / "lf"
    assert main(["prefs", str(FIX / "search"), "--format", "llamafactory", "-o", str(lf)]) == 0
    info = json.loads((lf / "dataset_info.json").read_text())
    assert next(iter(info.values()))["ranking"] is True


def test_trees_with_best_paths(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "search" / "trees" / "s.jsonl", _tree())
    best = tmp_path / "best.jsonl"
    rc = main(["prefs", str(tmp_path / "search"), "-o", str(tmp_path / "p.jsonl"), "--best-paths", str(best)])
    assert rc == 0
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == 3
    assert json.loads(best.read_text())["turns"][-1]["text"] == "You will get it."


def test_bad_source_is_a_clear_error(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["prefs", str(tmp_path / "missing"), "-o", str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "missing: no such file or folder" in err and "Traceback" not in err
    assert not (tmp_path / "o.jsonl").exists()
    assert main(["prefs", str(FIX / "search"), "--negatives", "0", "-o", str(tmp_path / "o.jsonl")]) == 2

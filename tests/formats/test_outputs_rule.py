"""The output rule's parts (core.outputs): which option values are inputs, and how a folder output
replaces an earlier one. The rule as a whole is tested through the CLI in bad_inputs/commands/ and
test_output_property.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sage_dialog.core import outputs


@pytest.fixture(autouse=True)
def _fresh_state():
    outputs.reset("test")
    yield
    outputs.reset()


def _folder(path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    return path


def test_named_inputs_take_the_path_out_of_specs_and_pairs_but_not_out_of_outputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("ann.yaml", "lab.txt", "model", "cfg-path", "run", "out.jsonl"):
        (tmp_path / name).write_text("x")
    outputs.note_named({"annotator": "mock:ann.yaml", "labels": ["user.emotion=lab.txt"], "model": ["m=hf:model"],
                        "nested": {"prompt": "cfg-path"}, "overrides": ["run_dir=run"], "output": "out.jsonl",
                        "base_url": "http://u:p@host/v1", "word": "oracle"})
    assert [str(p) for p in outputs.named_inputs()] == ["ann.yaml", "lab.txt", "model", "cfg-path"]


def test_commit_folder_replaces_only_what_the_same_writer_wrote(tmp_path):
    dst = tmp_path / "out"
    outputs.commit_folder(_folder(tmp_path / "t1", {"a.json": "1", "sub/b.json": "1"}), dst, "export")
    assert json.loads((dst / outputs.MARKER).read_text())["files"] == ["a.json", "sub/b.json"]
    (dst / "notes.txt").write_text("mine")
    outputs.commit_folder(_folder(tmp_path / "t2", {"a.json": "2"}), dst, "export")
    assert (dst / "a.json").read_text() == "2" and not (dst / "sub").exists()  # its old file (and folder) went
    assert (dst / "notes.txt").read_text() == "mine" and not (tmp_path / "t2").exists()
    # another command writing there (allowed: a sage-dialog folder) removes nothing of the first one's
    outputs.commit_folder(_folder(tmp_path / "t3", {"c.json": "3"}), dst, "format llamafactory-sft")
    assert {p.name for p in dst.iterdir()} == {"a.json", "c.json", "notes.txt", outputs.MARKER}


def test_commit_folder_into_a_forced_folder_adds_its_files_and_no_marker(tmp_path):
    dst = _folder(tmp_path / "theirs", {"thesis.txt": "work", "a.json": "old"})
    outputs.commit_folder(_folder(tmp_path / "t", {"a.json": "new"}), dst, "export")
    assert (dst / "thesis.txt").read_text() == "work" and (dst / "a.json").read_text() == "new"
    assert not (dst / outputs.MARKER).exists()  # still theirs: the next write needs --force again
    assert not outputs.is_own(dst)


def test_a_marker_or_a_stage_manifest_makes_a_folder_ours(tmp_path):
    assert outputs.is_blank(_folder(tmp_path / "e", {"logs/x.log": ""}))
    stage = _folder(tmp_path / "s", {"manifest.json": json.dumps({"stage": "mix", "config_hash": "h"})})
    assert outputs.is_own(stage) and outputs.is_own(tmp_path)  # a run folder: its stage folders have manifests
    assert not outputs.is_own(_folder(tmp_path / "u", {"manifest.json": json.dumps({"name": "someone else's"})}))


def test_the_first_journal_line_claims_the_output_folder(tmp_path):
    """A search killed with SIGKILL leaves no marker written on exit: its journal claims the folder."""
    from sage_dialog.core.io import JsonlJournal

    out = tmp_path / "s"
    outputs.note_output_folder(out)
    assert not out.exists()
    with JsonlJournal(out / "journal.jsonl") as j:
        j.append({"step": 1})
    assert outputs.is_own(out)
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "x.txt").write_text("x")
    outputs.note_output_folder(theirs)  # with --force: written into, never claimed
    with JsonlJournal(theirs / "journal.jsonl") as j:
        j.append({"step": 1})
    assert not outputs.is_own(theirs)

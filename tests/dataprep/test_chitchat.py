"""``sage-dialog import chitchat`` on small files in the corpus's shape (and its real file when installed)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from sage_dialog.cli import main
from sage_dialog.core.io import read_jsonl
from sage_dialog.core.schema import Dialog

A, B = "720840be-aaaa", "549cc1d1-bbbb"


def msg(text: str, who: str) -> dict[str, str]:
    return {"text": text, "sender": who, "timestamp": "2018-05-02T19:38:15Z"}


def corpus() -> dict[str, Any]:
    return {
        "c1": {"messages": [[msg("Hello", A), msg("How are you  doing today?", A)],
                            [msg("whats up", B), msg("im good", B)],
                            [msg("I just took a nap.", A)],
                            [msg("nice", B)]],
               "start": "2018-05-02T19:38:15Z", "prompt": "What did you do today?"},
        "c2": {"messages": [[msg("anyone there?", A)]], "start": "2018-05-02T19:40:00Z"},  # one speaker, one run
        "c3": {"messages": [[msg("hi", B)], [msg("hey", A)]], "start": "2018-05-02T19:41:00Z"},
    }


def write(tmp_path: Path, data: Any, name: str = "dataset.json") -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(data), encoding="utf-8")
    return p


def test_first_speaker_is_user_and_runs_are_joined(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write(tmp_path, corpus())
    out, seeds = tmp_path / "d.jsonl", tmp_path / "seeds.txt"
    assert main(["import", "chitchat", str(src), "-o", str(out), "--seeds-out", str(seeds)]) == 0
    dialogs = list(read_jsonl(out, Dialog))
    assert [d.id for d in dialogs] == ["c1", "c3"]  # c2 has one turn: below the default --min-turns 2
    c1 = dialogs[0]
    assert [(t.role, t.text) for t in c1.turns] == [
        ("user", "Hello How are you doing today?"),
        ("assistant", "whats up im good"),
        ("user", "I just took a nap."),
        ("assistant", "nice"),
    ]
    assert c1.meta["source"] == "chitchat" and c1.meta["prompt"] == "What did you do today?"
    assert dialogs[1].turns[0] == dialogs[1].turns[0].model_copy(update={"role": "user", "text": "hi"})
    assert seeds.read_text().splitlines() == ["Hello How are you doing today?", "hi"]
    assert "skipped 1 dialogs with fewer than 2 turns (1 with 1)" in capsys.readouterr().err


def test_limit_and_min_turns(tmp_path: Path) -> None:
    src = write(tmp_path, corpus())
    out = tmp_path / "d.jsonl"
    assert main(["import", "chitchat", str(src), "-o", str(out), "--min-turns", "3"]) == 0
    assert [d.id for d in read_jsonl(out, Dialog)] == ["c1"]
    assert main(["import", "chitchat", str(src), "-o", str(out), "--min-turns", "1", "--limit", "2"]) == 0
    assert [d.id for d in read_jsonl(out, Dialog)] == ["c1", "c2"]


BAD: list[tuple[Any, str]] = [
    ([1, 2], r"expected a JSON object of chitchat conversations"),
    ({}, r"empty object"),
    ({"x": {"turns": []}}, r"record x: field messages: expected a non-empty list"),
    ({"x": {"messages": [[{"text": "hi"}]]}}, r"record x: field messages\[0\]\[0\]\.sender: expected a sender"),
    ({"x": {"messages": [[msg("hi", A), msg("yo", B)]]}}, r"record x: field messages\[0\]\[1\]\.sender: a run mixes"),
    ({"x": {"messages": [[msg("hi", A)], [msg("still me", A)]]}}, r"record x: field messages\[1\]: two runs in a row from one sender.*one speaker only"),
    ({"x": {"messages": [[msg("hi", A)], [msg("b", B)], [msg("c", "C")]]}}, r"record x: field messages\[2\]\[0\]\.sender: a third speaker"),
    ({"x": {"messages": [[msg(5, A)]]}}, r"record x: field messages\[0\]\[0\]\.text: expected a string"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("data", "error"), BAD)
def test_bad_input_exits_2_naming_record_and_field(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    data: Any, error: str) -> None:
    good = corpus()
    src = write(tmp_path, {**good, **data} if isinstance(data, dict) and data and "x" in data else data)
    out = tmp_path / "d.jsonl"
    assert main(["import", "chitchat", str(src), "-o", str(out), "--seeds-out", str(tmp_path / "s.txt")]) == 2
    err = capsys.readouterr().err
    import re

    assert re.search(error, err), err
    assert str(src) in err and "Traceback" not in err
    assert not out.exists() and not (tmp_path / "s.txt").exists()  # nothing partial


def test_a_file_that_is_not_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "dataset.json"
    src.write_text("id,text\n1,hello\n")
    assert main(["import", "chitchat", str(src), "-o", str(tmp_path / "d.jsonl")]) == 2
    assert str(src) in capsys.readouterr().err
    assert not (tmp_path / "d.jsonl").exists()


@pytest.mark.skipif(importlib.util.find_spec("chitchat_dataset") is None, reason="pip install chitchat-dataset")
def test_default_path_is_the_installed_corpus(tmp_path: Path) -> None:
    out = tmp_path / "d.jsonl"
    assert main(["import", "chitchat", "-o", str(out), "--limit", "5", "--min-turns", "4"]) == 0
    dialogs = list(read_jsonl(out, Dialog))
    assert len(dialogs) == 5
    for d in dialogs:
        assert len(d.turns) >= 4 and d.turns[0].role == "user"
        assert all(a.role != b.role for a, b in zip(d.turns, d.turns[1:], strict=False))


def test_max_turns_cuts_long_dialogs(tmp_path: Path) -> None:
    src = write(tmp_path, corpus())
    out = tmp_path / "d.jsonl"
    assert main(["import", "chitchat", str(src), "-o", str(out), "--max-turns", "2"]) == 0
    assert [len(d.turns) for d in read_jsonl(out, Dialog)] == [2, 2]
    assert main(["import", "chitchat", str(src), "-o", str(out), "--min-turns", "3", "--max-turns", "2"]) == 2

"""Property: whatever output path a writing command is given, drawn from its inputs' own tree (the
same folder, a parent, a child, the input itself, a symlink to it), no input byte changes and no file
the command was not pointed at changes or goes away.

Each example builds a fresh tree of inputs and runs one cheap writing command through the real CLI.
The only pre-existing file a run may change is a regular file named as its output file that is not
one of its inputs (``-o FILE`` replaces FILE, as ``sort -o`` does).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sage_dialog.cli import main

SHAREGPT = [{"id": "identity_1", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}],
             "tags": ["mine"]}]
TRL = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
DIALOG = {"kind": "dialog", "id": "d1", "turns": [{"role": "user", "text": "I failed my exam."},
                                                  {"role": "assistant", "text": "That is hard. Want to talk?"}]}
NODES = [
    {"kind": "node", "id": "n0", "tree": "seed-0000", "parent": None, "depth": 0, "role": "user", "text": "hi", "kept": True},
    {"kind": "node", "id": "n1", "tree": "seed-0000", "parent": "n0", "depth": 1, "role": "assistant", "text": "a",
     "kept": True},
    {"kind": "node", "id": "n2", "tree": "seed-0000", "parent": "n0", "depth": 1, "role": "assistant", "text": "b",
     "kept": False},
]
ESCONV = [{"emotion_type": "anxiety", "problem_type": "job", "situation": "s", "dialog": [
    {"speaker": "seeker", "content": "I lost my job."},
    {"speaker": "supporter", "content": "I am sorry. What happened?", "annotation": {"strategy": "Question"}}]}]
MOCK = {"outputs": ['{"motivation": "vent", "emotion": "sad", "topics": []}']}


def _tree(root: Path) -> None:
    """in/ holding the inputs under the very names the commands write (mix.json, train.jsonl...),
    search trees, a mock script, an empty folder; symlinks to a file and to the folder beside it."""
    (root / "in" / "s" / "trees").mkdir(parents=True)
    (root / "in" / "empty").mkdir()
    (root / "in" / "mix.json").write_text(json.dumps(SHAREGPT), encoding="utf-8")
    (root / "in" / "train.jsonl").write_text(json.dumps(TRL) + "\n", encoding="utf-8")
    (root / "in" / "valid.jsonl").write_text(json.dumps(TRL) + "\n" + json.dumps(TRL) + "\n", encoding="utf-8")
    (root / "in" / "one.jsonl").write_text(json.dumps(DIALOG) + "\n", encoding="utf-8")
    (root / "in" / "spec.json").write_text(json.dumps({"train.jsonl": {"prompt": ""}, "valid.jsonl": {"prompt": ""}}),
                                           encoding="utf-8")
    (root / "in" / "mock.json").write_text(json.dumps(MOCK), encoding="utf-8")
    (root / "in" / "es.json").write_text(json.dumps(ESCONV), encoding="utf-8")
    (root / "in" / "seeds.txt").write_text("I failed my exam.\n", encoding="utf-8")
    (root / "in" / "s" / "trees" / "seed-0000.jsonl").write_text("".join(json.dumps(n) + "\n" for n in NODES),
                                                                 encoding="utf-8")
    (root / "in" / "notes.txt").write_text("mine\n", encoding="utf-8")
    (root / "link.json").symlink_to(root / "in" / "mix.json")
    (root / "linkdir").symlink_to(root / "in")


# command -> (argv before the output, how the output is given, argv after, inputs it reads)
COMMANDS: dict[str, tuple[list[str], str, list[str], list[str]]] = {
    "convert": (["convert", "{r}/in/mix.json"], "positional", ["--to", "dialogs"], ["in/mix.json"]),
    "convert-folder": (["convert", "{r}/link.json"], "positional", ["--to", "llamafactory-sft"], ["in/mix.json"]),
    "chain": (["chain", "{r}/in/train.jsonl"], "positional", ["--to", "dialogs"], ["in/train.jsonl"]),
    "mix": (["mix", "{r}/in/spec.json", "-o"], "option", [], ["in/spec.json", "in/train.jsonl", "in/valid.jsonl"]),
    "prefs": (["prefs", "{r}/in/s", "-o"], "option", [], ["in/s/trees/seed-0000.jsonl"]),
    "trees": (["trees", "{r}/in/s", "--html"], "option", [], ["in/s/trees/seed-0000.jsonl"]),
    "annotate": (["annotate", "{r}/in/one.jsonl", "--annotator", "mock:{r}/in/mock.json", "-q", "-o"], "option",
                 [], ["in/one.jsonl", "in/mock.json"]),
    "import": (["import", "esconv", "{r}/in/es.json", "--seeds-out", "{r}/seeds.txt", "-o"], "option", [],
               ["in/es.json"]),
    "search": (["search", "{r}/in/seeds.txt", "--assistant", "mock:{r}/in/mock.json", "--user", "mock:{r}/in/mock.json",
                "--judge", "mock:{r}/in/mock.json", "--turns", "1", "--candidates", "2", "-q", "-o"], "option", [],
               ["in/seeds.txt", "in/mock.json"]),
    "steerability": (["steerability", "--model", "mock:{r}/in/mock.json", "--contexts", "{r}/in/one.jsonl", "--action",
                      "a_emotion=sad", "-q", "-o"], "option", [], ["in/one.jsonl", "in/mock.json"]),
    "agreement": (["agreement", "{r}/in/one.jsonl", "{r}/in/train.jsonl", "-o"], "option", [],
                  ["in/one.jsonl", "in/train.jsonl"]),
}
FOLDER_OUTPUT = {"convert-folder", "mix", "search"}

# where the output goes, relative to the tree's root: the inputs themselves, their folders, parents,
# children of files and folders, the symlinks, and fresh names beside them
PLACES = ["in", "in/mock.json", "in/one.jsonl", "in/es.json", "in/seeds.txt", "in/train.jsonl", "in/mix.json", "link.json", "linkdir", "in/s", "in/s/trees",
          "in/s/trees/seed-0000.jsonl", "in/spec.json", "in/valid.jsonl", "linkdir/mix.json", ".", "in/empty",
          "in/notes.txt", "linkdir/new", "in/new.jsonl", "in/empty/new", "in/s/new", "in/mix.json/child", "new-out"]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.is_symlink()}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(place=st.sampled_from(PLACES), relative=st.booleans())
def test_no_output_path_changes_an_input_or_a_file_it_was_not_given(command: str, place: str, relative: bool) -> None:
    before_cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _tree(root)
        os.chdir(root)
        try:
            pre, out_path = _files(root), root / place
            head, _, tail, inputs = COMMANDS[command]
            given_path = place if relative else str(out_path)  # relative to the working folder, the tree's root
            argv = [a.replace("{r}", str(root)) for a in head] + [given_path] + tail
            stderr = io.StringIO()
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(stderr):
                code = main(argv)
            post = _files(root)
        finally:
            os.chdir(before_cwd)
        assert code in (0, 2), f"{argv}: exit {code}\n{stderr.getvalue()}"
        assert "Traceback" not in stderr.getvalue()
        for f in inputs:
            assert post.get(f) == pre[f], f"{argv}: input {f} changed"
        # the one file it may replace: a regular file named as its output file
        target = out_path.resolve()  # a symlink is written through
        replaceable = {str(target.relative_to(root))} if command not in FOLDER_OUTPUT and target.is_file() else set()
        changed = [f for f in pre if f not in replaceable and post.get(f) != pre[f]]
        assert not changed, f"{argv}: changed or removed {changed}\n{stderr.getvalue()}"
        if code == 2:  # refused: nothing partial left behind
            assert not [f for f in post if f not in pre], f"{argv}: left {sorted(set(post) - set(pre))}"
        assert (root / "link.json").is_symlink() and (root / "linkdir").is_symlink(), f"{argv}: a symlink was replaced"

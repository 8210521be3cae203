"""Action-level preference pairs: same state, different action (with replies, or tag blocks only)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sage_dialog.core.errors import UserError
from sage_dialog.core.io import write_jsonl
from sage_dialog.core.schema import ActionBranch, SearchNode, Tags
from sage_dialog.stages import prefs
from sage_dialog.stages.search.tree import read_tree

SAD = Tags(motivation="venting", emotion="sad", topics=["exam"])


def _act(m: str, topic: str = "exam") -> Tags:
    return Tags(motivation=m, emotion="calm", topics=[topic])


def _tree() -> list[SearchNode]:
    """One decision: comfort kept; advice twice (best -0.5); joke; a reply read in another state."""
    a = lambda i, text, act, score, **kw: SearchNode(  # noqa: E731
        id=i, tree="seed-1", parent="u0", depth=1, role="assistant", text=text, state=kw.pop("state", SAD),
        action=act, kept=kw.pop("kept", False), score=score, **kw)
    root = SearchNode(id="u0", tree="seed-1", depth=0, role="user", text="I failed my exam.",
                      branches=[ActionBranch(action=Tags(motivation="comfort", emotion="calm"), prior=0.6, visits=2,
                                             value=1.5, replies=["c1", "c2"], chosen=True)])
    return [
        root,
        a("c1", "So sorry.", _act("comfort"), 1.5, kept=True, branch=0),
        a("c2", "Sorry, hug.", _act("comfort", "school"), 1.0, branch=0),  # same action, another topic: no pair
        a("v1", "Study more.", _act("advice"), -1.0),
        a("v2", "Make a list.", _act("advice"), -0.5),
        a("j1", "Haha.", _act("joke"), -0.8),
        a("x1", "Calm down.", _act("reassure"), 0.0, state=Tags(motivation="venting", emotion="angry")),
    ]


def test_action_pairs_share_the_state_and_differ_in_the_action(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "t.jsonl", _tree())
    assert read_tree(tmp_path / "t.jsonl")[0].branches[0].replies == ["c1", "c2"]  # branches round-trip
    trees = prefs.read_trees(tmp_path)
    text, _ = prefs.build(trees, prefs.Settings())
    assert len(text) == 5  # every dropped sibling
    pairs, _ = prefs.build(trees, prefs.Settings(level="action"))
    assert [(p.chosen.text, p.rejected.text) for p in pairs] == [("So sorry.", "Make a list."), ("So sorry.", "Haha.")]
    for p in pairs:
        assert p.chosen.state == p.rejected.state == SAD
        assert "motivation" in p.tag_diff and p.margin is not None and p.source == "search-tree-action"
        assert [t.text for t in p.history] == ["I failed my exam."]
    tags, _ = prefs.build(trees, prefs.Settings(level="tags", negatives=1))
    assert len(tags) == 1 and tags[0].chosen.text == tags[0].rejected.text == ""
    assert tags[0].chosen.action.motivation == "comfort" and tags[0].rejected.action.motivation == "advice"
    assert prefs.build(trees, prefs.Settings(level="action", min_margin=2.2))[0] == [pairs[1]]


def test_action_pairs_train_rows(tmp_path: Path) -> None:
    from sage_dialog.train.data import pair_to_record

    write_jsonl(tmp_path / "t.jsonl", _tree())
    [p, _] = prefs.build(prefs.read_trees(tmp_path), prefs.Settings(level="tags"))[0]
    rec = pair_to_record(p)
    assert rec["chosen"][0]["content"].startswith("{u_motivation: venting") and rec["chosen"][0]["content"].endswith("}")


def test_transcripts_have_no_action_level(tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "a.txt").write_text("User: hi\n")
    with pytest.raises(UserError, match="needs search trees"):
        prefs.load_source(tmp_path, prefs.Settings(level="action"))

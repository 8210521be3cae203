"""Preference pairs and best paths from search trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from sage_dialog.core.errors import UserError
from sage_dialog.core.io import write_jsonl
from sage_dialog.core.schema import SearchNode, Tags
from sage_dialog.stages import prefs


def _tree(name: str = "seed-1") -> list[SearchNode]:
    """Root user turn, 3 candidates (b kept), user reply, 2 candidates (e kept)."""
    act = {k: Tags(motivation=k, emotion="calm") for k in ("comfort", "joke", "advice", "praise", "ask")}
    return [
        SearchNode(id="u0", tree=name, parent=None, depth=0, role="user", text="I failed my test."),
        SearchNode(id="a", tree=name, parent="u0", depth=1, role="assistant", text="Haha.", action=act["joke"],
                   kept=False, score=0.1),
        SearchNode(id="b", tree=name, parent="u0", depth=1, role="assistant", text="That's rough.",
                   state=Tags(emotion="sad"), action=act["comfort"], kept=True, score=0.7),
        SearchNode(id="c", tree=name, parent="u0", depth=1, role="assistant", text="Study more.",
                   action=act["advice"], kept=False, score=0.2),
        SearchNode(id="u1", tree=name, parent="b", depth=2, role="user", text="Yeah, third time."),
        SearchNode(id="d", tree=name, parent="u1", depth=3, role="assistant", text="Third?", action=act["ask"],
                   kept=False, score=0.3),
        SearchNode(id="e", tree=name, parent="u1", depth=3, role="assistant", text="You will get it.",
                   action=act["praise"], kept=True, score=0.6),
    ]


def test_one_pair_per_dropped_candidate_with_chosen_history(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "trees" / "seed-1.jsonl", _tree())
    pairs, paths = prefs.build(prefs.read_trees(tmp_path), prefs.Settings())
    assert [(p.chosen.text, p.rejected.text) for p in pairs] == [
        ("That's rough.", "Study more."),  # hardest negative (higher judge score) first
        ("That's rough.", "Haha."),
        ("You will get it.", "Third?"),
    ]
    assert [t.text for t in pairs[2].history] == ["I failed my test.", "That's rough.", "Yeah, third time."]
    assert pairs[2].history[1].action == Tags(motivation="comfort", emotion="calm")
    assert pairs[0].margin == pytest.approx(0.5)
    assert pairs[0].tag_diff == ["motivation"]
    assert [t.text for t in paths[0].turns] == ["I failed my test.", "That's rough.", "Yeah, third time.",
                                                "You will get it."]


def test_negatives_margin_tags_and_balance(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "a.jsonl", _tree("s1"))
    s2 = [n.model_copy(update={"text": "I lost my keys."}) if n.id == "u0" else n for n in _tree("s2")[:4]]
    write_jsonl(tmp_path / "b.jsonl", s2)  # s2 has one decision: 2 pairs
    trees = prefs.read_trees(tmp_path)
    one = prefs.build(trees, prefs.Settings(negatives=1))[0]
    assert sorted(p.rejected.text for p in one) == ["Study more.", "Study more.", "Third?"]
    wide = prefs.build(trees, prefs.Settings(min_margin=0.45))[0]
    assert {p.rejected.text for p in wide} == {"Study more.", "Haha."}
    bare = prefs.build(trees, prefs.Settings(history_tags=False))[0]
    assert all(t.action is None for p in bare for t in p.history)
    balanced = prefs.build(trees, prefs.Settings(balance=True))[0]
    assert sorted(p.seed for p in balanced) == ["s1", "s1", "s2", "s2"]


def test_duplicate_pairs_are_dropped(tmp_path: Path) -> None:
    nodes = _tree()
    nodes.append(nodes[1].model_copy(update={"id": "a2"}))  # the same dropped reply sampled twice
    write_jsonl(tmp_path / "t.jsonl", nodes)
    kept = prefs.build(prefs.read_trees(tmp_path), prefs.Settings())[0]
    assert len(kept) == 3
    assert len(prefs.build(prefs.read_trees(tmp_path), prefs.Settings(dedup=False))[0]) == 4


def test_bad_tree_files_name_file_record_and_field(tmp_path: Path) -> None:
    (tmp_path / "t.jsonl").write_text('{"kind": "node", "id": "x", "tree": "t", "parent": null, "role": "user"}\n')
    with pytest.raises(UserError) as e:
        prefs.read_trees(tmp_path)
    assert any("t.jsonl: record 1: field depth" in line for line in e.value.problems)
    (tmp_path / "t.jsonl").write_text('{"kind": "dialog"}\n')
    with pytest.raises(UserError, match="no search-tree nodes"):
        prefs.read_trees(tmp_path)

from __future__ import annotations

import shutil
from pathlib import Path

from sage_dialog.formats.transcripts import read_transcript_dir
from sage_dialog.stages.search.search import export_transcripts, load_trees
from sage_dialog.stages.search.tree import best_path, decisions, node_turn

FIX = Path(__file__).parent / "fixtures"


def test_export_matches_original_transcripts_byte_for_byte_and_reads_back(tmp_path):
    (tmp_path / "run" / "trees").mkdir(parents=True)
    shutil.copy(FIX / "tree.jsonl", tmp_path / "run" / "trees" / "seed-0000.jsonl")
    assert export_transcripts(tmp_path / "run", tmp_path / "tx") == 1
    want = sorted(p.relative_to(FIX / "transcripts") for p in (FIX / "transcripts").rglob("*.txt"))
    got = sorted(p.relative_to(tmp_path / "tx") for p in (tmp_path / "tx").rglob("*.txt"))
    assert got == want
    for rel in want:
        assert (tmp_path / "tx" / rel).read_bytes() == (FIX / "transcripts" / rel).read_bytes(), rel
    # and back: the plain transcript is the best path, the full one also carries the dropped candidates
    nodes = load_trees(tmp_path / "run")[0]
    path = [node_turn(n) for n in best_path(nodes)]
    plain = read_transcript_dir(tmp_path / "tx", "plain")[0]
    full = read_transcript_dir(tmp_path / "tx" / "full", "full")[0]

    def norm(ts):
        return [(t.role, t.text, t.state and t.state.fields(), t.action and t.action.fields()) for t in ts]

    assert norm(plain.turns) == norm(full.turns) == norm(path)
    dropped = {d["turn"]: [c["text"] for c in d["candidates"]] for d in full.meta["dropped"]}
    assert dropped == {i: [s.text for s in sib] for i, (_, sib) in zip((1, 3), decisions(nodes), strict=True)}

"""What `search` writes, `prefs` and `validate` read: any reply text, long seeds, unparsed judges.

The assistant here is a real :class:`Backend` registered as a provider, so the whole CLI path runs
(search -> trees + transcripts -> prefs / validate); its replies are whatever the test hands it:
newlines, braces, tag-like text, the transcript prefixes themselves.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sage_dialog.backends.base import ChatRequest, register_provider
from sage_dialog.backends.mock import MockBackend
from sage_dialog.cli import main
from sage_dialog.core.schema import SearchNode

REPLIES: list[str] = ["fine"]
JUDGE: list[str] = ["Response 1 is better"]


def _answer(r: ChatRequest, j: int) -> str:
    """Assistant replies come from ``REPLIES`` (in turn), the judge answers ``JUDGE[0]``."""
    prompt = r.messages[-1]["content"]
    if "Candidates:" in prompt:
        return JUDGE[0]
    if r.messages and r.messages[0]["content"].startswith("You are a real person"):
        return "I see. And you?"
    h = int(hashlib.sha256(f"{r.messages}{r.sampling.seed}{j}".encode()).hexdigest(), 16)
    reply = REPLIES[h % len(REPLIES)]
    return f"{{u_motivation: venting, u_emotion: sad}} {{a_motivation: comfort, a_emotion: calm}} {reply}"


# the mock: provider with a function, under its own name so the CLI can load it (hostiletext:m)
register_provider("hostiletext", lambda model, **kw: MockBackend(label=f"hostiletext-{model}", fn=_answer, **kw))


def _search(tmp: Path, seed: str, *, turns: int = 1, candidates: int = 2) -> Path:
    seeds = tmp / "seeds.txt"
    seeds.write_text(seed + "\n", encoding="utf-8")
    run = tmp / "run"
    assert main(["search", str(seeds), "-o", str(run), "--assistant", "hostiletext:m", "--turns", str(turns),
                 "--candidates", str(candidates), "--no-progress"]) == 0
    return run


def _nodes(run: Path) -> list[SearchNode]:
    return [SearchNode.model_validate_json(line) for f in sorted((run / "trees").glob("*.jsonl"))
            for line in f.read_text(encoding="utf-8").split("\n") if line.strip()]


_piece = st.sampled_from(["a", " ", "\n", "\r\n", "\t", "{", "}", "{a_motivation: x}", "🤖: ", "\t🤖❌: ", "🤖✅: ",
                          "🧑‍💻: ", "\\", "\\n", "null", ":", ",", "[", "]", "\x0b", "\u2028", "é"])
_reply = st.lists(_piece, min_size=1, max_size=10).map("".join).filter(lambda s: s.strip() != "")


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(_reply, min_size=2, max_size=2, unique=True))
def test_any_reply_text_survives_search_transcripts_prefs(replies: list[str]) -> None:
    REPLIES[:] = replies
    JUDGE[0] = "Response 1 is better"
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        run = _search(tmp, "I failed my driving test again.")
        stored = {n.text for n in _nodes(run) if n.role == "assistant"}
        # the transcripts the search wrote read back, in every reader
        assert main(["validate", str(run / "transcripts" / "full"), "--format", "transcripts-full"]) == 0
        assert main(["validate", str(run / "transcripts"), "--format", "transcripts"]) == 0
        assert main(["prefs", str(run / "transcripts"), "--format", "sage-comparison", "-o",
                     str(tmp / "cmp.json")]) in (0, 2)  # 2 only when both candidates were equal (no pair)
        out = tmp / "pairs.jsonl"
        if main(["prefs", str(run / "transcripts"), "-o", str(out), "--no-dedup"]) == 0:
            pairs = [json.loads(x) for x in out.read_text(encoding="utf-8").split("\n") if x]
            assert {p["chosen"]["text"] for p in pairs} | {p["rejected"]["text"] for p in pairs} <= stored
            from_trees = tmp / "tree-pairs.jsonl"
            assert main(["prefs", str(run), "-o", str(from_trees), "--no-dedup"]) == 0
            tree_pairs = [json.loads(x) for x in from_trees.read_text(encoding="utf-8").split("\n") if x]
            assert [(p["chosen"]["text"], p["rejected"]["text"]) for p in pairs] == \
                [(p["chosen"]["text"], p["rejected"]["text"]) for p in tree_pairs]


def test_reply_with_newlines_and_braces_reads_back(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The case the outside test found: a real model's replies with newlines and braces."""
    REPLIES[:] = ["Sure!\n{\n  \"plan\": [1, 2]\n}\nTry this.", "{oops} I mean:\n\t🤖❌: no"]
    JUDGE[0] = "Response 2 is better"
    run = _search(tmp_path, "I need a plan.", turns=2)
    assert main(["validate", str(run / "transcripts" / "full")]) == 0
    assert main(["prefs", str(run / "transcripts"), "--format", "sage-comparison", "-o", str(tmp_path / "p.json")]) == 0
    rows = json.loads((tmp_path / "p.json").read_text(encoding="utf-8"))
    assert rows and all(len(r["output"]) == 2 for r in rows)
    capsys.readouterr()


def test_seed_of_one_long_word_gets_a_short_transcript_name(tmp_path: Path) -> None:
    """A 300-character one-word seed made `search` die at the end with `File name too long`."""
    REPLIES[:] = ["ok", "fine"]
    JUDGE[0] = "Response 1 is better"
    seed = "x" * 300
    run = _search(tmp_path, seed)
    names = [p.name for p in (run / "transcripts").glob("*.txt")]
    assert len(names) == 1 and len(names[0].encode()) <= 255 and names[0].startswith("x" * 100)
    assert main(["validate", str(run / "transcripts")]) == 0
    dst = tmp_path / "conv"
    assert main(["convert", str(run / "best.jsonl"), str(dst), "--to", "transcripts"]) == 0
    assert [len(p.name) for p in dst.glob("*.txt")] == [len(names[0])]


def test_unparsed_judge_decisions_give_no_pairs_by_default(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    REPLIES[:] = ["one", "two", "three"]
    JUDGE[0] = "I cannot decide, they are all lovely."
    run = _search(tmp_path, "I failed my exam.", turns=3, candidates=3)
    capsys.readouterr()
    assert main(["prefs", str(run), "-o", str(tmp_path / "p.jsonl")]) == 2
    _, err = capsys.readouterr()
    assert "3 decisions were left out because the judge's answer was unparsed" in err, err
    assert not (tmp_path / "p.jsonl").exists()
    assert main(["prefs", str(run), "-o", str(tmp_path / "p.jsonl"), "--include-unparsed", "--no-dedup"]) == 0
    assert len((tmp_path / "p.jsonl").read_text(encoding="utf-8").splitlines()) == 6

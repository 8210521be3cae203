from __future__ import annotations

import json
from pathlib import Path

import pytest

from sage_dialog.core.errors import UserError
from sage_dialog.core.io import read_jsonl
from sage_dialog.core.schema import Dialog, SearchNode
from sage_dialog.formats.transcripts import read_transcript_dir
from sage_dialog.roles.selector import LLMSelector
from sage_dialog.roles.user_simulator import LLMUserSimulator
from sage_dialog.stages.search.config import SearchConfig
from sage_dialog.stages.search.search import run_search
from sage_dialog.stages.search.tree import best_path, read_tree

SEEDS = ["I failed my driving test again.", "My sister is getting married!", "I can't sleep lately."]


def _search(be, out: Path, seeds=SEEDS, mode="logprob", **cfg):
    sel = LLMSelector(be, mode=mode, none_policy=cfg.pop("none_policy", "resample"))
    return run_search(be, LLMUserSimulator(be), sel, seeds, SearchConfig(**cfg), out)


def _trees(out: Path) -> list[list[SearchNode]]:
    return [read_tree(p) for p in sorted((out / "trees").glob("seed-*.jsonl"))]


@pytest.mark.parametrize("strategy", ["best_of_n", "beam", "lookahead"])
def test_strategies_write_valid_trees(scripted, tmp_path, strategy):
    be = scripted()
    out = _search(be, tmp_path / strategy, strategy=strategy, turns=3, candidates=3, beam_width=2)
    trees = _trees(out)
    assert len(trees) == 3
    for nodes in trees:
        path = best_path(nodes)
        assert [n.role for n in path] == ["user", "assistant"] * 3
        assert all(n.kept for n in path) and path[0].parent is None
        for n in path[1::2]:  # every kept reply was the judge's choice among its siblings, with evidence
            sib = [c for c in nodes if c.parent == n.parent and c.role == "assistant" and not c.sampling.get("lookahead")]
            assert n.decision is not None and n.decision.outcome == "chosen" and n.decision.raw_output
            if strategy != "beam":
                assert sib[n.decision.choice].id == n.id
                assert "GOOD" in n.text or n.decision.scores is not None
            assert n.sampling["temperature"] == 0.95 and n.sampling["top_k"] == 50
        kept_assistant = [n for n in nodes if n.role == "assistant" and n.kept]
        assert len(kept_assistant) == 3
        if strategy == "lookahead":
            assert any(n.sampling.get("lookahead") for n in nodes)
    best = list(read_jsonl(out / "best.jsonl", Dialog))
    assert [d.meta["seed"] for d in best] == SEEDS
    back = read_transcript_dir(out / "transcripts", "plain")
    assert len(back) == 3 and len(list((out / "transcripts" / "full").glob("*.txt"))) == 3
    assert sorted(d.turns[-1].text for d in back) == sorted(d.turns[-1].text for d in best)
    man = json.loads((out / "manifest.json").read_text())
    assert man["summary"]["seeds"] == 3 and man["usage"]["model_calls"] > 0
    # all seeds are batched together: the first generation call carries 3 seeds x 3 candidates
    assert be.batches("generate")[0] == 9


def test_beam_keeps_several_dialogs(scripted, tmp_path):
    out = _search(scripted(), tmp_path, strategy="beam", turns=3, candidates=3, beam_width=2)
    nodes = _trees(out)[0]
    # two surviving user nodes at depth 2 (one per beam), one of them on the kept path
    assert len([n for n in nodes if n.role == "user" and n.depth == 2]) == 2


def test_resumed_search_equals_uninterrupted_without_repeating_calls(scripted, tmp_path):
    full_be = scripted()
    full = _search(full_be, tmp_path / "full", strategy="beam", turns=3, candidates=3)

    dying = scripted(crash_at_call=5)  # dies at its 5th generate call, like a killed process
    with pytest.raises(RuntimeError, match="simulated crash"):
        _search(dying, tmp_path / "resumed", strategy="beam", turns=3, candidates=3)
    assert not (tmp_path / "resumed" / "best.jsonl").exists()
    again = scripted()
    resumed = _search(again, tmp_path / "resumed", strategy="beam", turns=3, candidates=3)
    assert [[n.model_dump() for n in t] for t in _trees(resumed)] == [[n.model_dump() for n in t] for t in _trees(full)]
    assert (resumed / "best.jsonl").read_bytes() == (full / "best.jsonl").read_bytes()
    # nothing asked twice
    assert len(dying.history) > 0 and len(dying.history) + len(again.history) == len(full_be.history)
    man = json.loads((resumed / "manifest.json").read_text())
    assert man["usage"]["replayed_calls"] > 0
    # a finished search re-run makes no calls at all
    idle = scripted()
    _search(idle, tmp_path / "resumed", strategy="beam", turns=3, candidates=3)
    assert len(idle.history) == 0


def test_resume_refuses_a_different_config(scripted, tmp_path):
    _search(scripted(), tmp_path, turns=1, candidates=2)
    with pytest.raises(UserError, match="different config"):
        _search(scripted(), tmp_path, turns=2, candidates=2)


def test_none_good_policies(scripted, tmp_path):
    be = scripted(none_good=True)
    out = _search(be, tmp_path / "resample", seeds=SEEDS[:1], mode="generate", turns=1, candidates=2, max_resamples=2)
    nodes = _trees(out)[0]
    cands = [n for n in nodes if n.role == "assistant"]
    assert len(cands) == 6  # first draw + 2 resamples
    assert {n.sampling["attempt"] for n in cands} == {0, 1, 2}
    assert all(n.decision.outcome == "none_good" for n in cands)
    assert sum(n.kept for n in cands) == 1  # after the last resample the best is kept anyway

    out = _search(scripted(none_good=True), tmp_path / "stop", seeds=SEEDS[:1], mode="generate", turns=3,
                  candidates=2, none_policy="stop")
    nodes = _trees(out)[0]
    assert [n.role for n in best_path(nodes)] == ["user"]
    assert json.loads((out / "trees" / "seed-0000.meta.json").read_text())["stopped"] == "judge"


def test_unparsed_judge_keeps_first_sample_and_records_raw(scripted, tmp_path):
    out = _search(scripted(judge_answer="hmm, hard to say"), tmp_path, seeds=SEEDS[:1], mode="generate",
                  turns=2, candidates=3)
    nodes = _trees(out)[0]
    kept = [n for n in best_path(nodes) if n.role == "assistant"]
    assert all(n.decision.outcome == "unparsed" and n.decision.raw_output == "hmm, hard to say" for n in kept)


def test_budget_stops_a_seed(scripted, tmp_path):
    out = _search(scripted(), tmp_path, seeds=SEEDS[:2], turns=5, candidates=2, budget_requests=8)
    for i in range(2):
        meta = json.loads((out / "trees" / f"seed-{i:04d}.meta.json").read_text())
        assert meta["stopped"] == "budget" and meta["requests"] >= 8
        assert len([n for n in best_path(_trees(out)[i]) if n.role == "assistant"]) < 5


def test_sandbox_oracle_roles_drop_in(scripted, tmp_path):
    from sage_dialog.sandbox.oracles import oracle_for

    be = scripted()
    out = run_search(be, oracle_for("user"), oracle_for("selector"), SEEDS[:2],
                     SearchConfig(turns=2, candidates=3, max_resamples=1), tmp_path, transcripts=False)
    for nodes in _trees(out):
        path = best_path(nodes)
        assert [n.role for n in path] == ["user", "assistant", "user", "assistant"]
        assert all(n.decision.mode == "oracle" for n in path if n.role == "assistant")
        assert all(n.model == "oracle-user" for n in path[2::2])

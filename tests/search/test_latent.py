"""Search in the latent: action proposals, the ``latent`` and ``mcts`` strategies, their trees."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from sage_dialog.core.errors import UserError
from sage_dialog.core.schema import SearchNode, Tags
from sage_dialog.roles.selector import LLMSelector
from sage_dialog.roles.user_simulator import LLMUserSimulator
from sage_dialog.stages.search.actions import explore, load_action_set, normalise, top_k
from sage_dialog.stages.search.config import LatentConfig, SearchConfig
from sage_dialog.stages.search.mcts import puct_pick
from sage_dialog.stages.search.search import run_search
from sage_dialog.stages.search.tree import best_path, read_tree

SEEDS = ["I failed my driving test again.", "My sister is getting married!", "I can't sleep lately."]


def _search(be, out: Path, seeds=SEEDS, **cfg):
    latent = cfg.pop("latent", {})
    sel = LLMSelector(be, mode=cfg.pop("mode", "logprob"))
    return run_search(be, LLMUserSimulator(be), sel, seeds, SearchConfig(latent=LatentConfig(**latent), **cfg), out,
                      transcripts=False)


def _trees(out: Path) -> list[list[SearchNode]]:
    return [read_tree(p) for p in sorted((out / "trees").glob("seed-*.jsonl"))]


def test_action_sets(tmp_path):
    sandbox = load_action_set("sandbox")
    assert len(sandbox) == 6 and sandbox[0] == Tags(motivation="comfort", emotion="gentle")
    esconv = load_action_set("esconv_strategies")
    assert len(esconv) == 8 and all(a.motivation and a.emotion is None for a in esconv)
    f = tmp_path / "acts.json"
    f.write_text(json.dumps([{"motivation": "joke", "emotion": "playful"}, {"motivation": "joke", "emotion": "playful"},
                             {"motivation": "advice"}]))
    assert load_action_set(str(f)) == [Tags(motivation="joke", emotion="playful"), Tags(motivation="advice")]
    f.write_text(json.dumps([{"motivation": "joke"}, {"mood": "x"}]))
    with pytest.raises(UserError, match=r"acts.json: record 2"):
        load_action_set(str(f))
    with pytest.raises(UserError, match="no such label-set file"):
        load_action_set(str(tmp_path / "missing.txt"))


def test_priors_exploration_and_puct():
    p = normalise([-1.0, -2.0, -3.0])
    assert abs(sum(p) - 1) < 1e-9 and p[0] > p[1] > p[2]
    flat = normalise([-1.0, -2.0, -3.0], temperature=100)
    assert max(flat) - min(flat) < 0.01
    assert top_k([0.1, 0.5, 0.5, 0.2], 2) == [1, 2]
    cfg = LatentConfig(epsilon=0.5)
    assert explore([1.0, 0.0], cfg, random.Random(0)) == [0.75, 0.25]
    cfg = LatentConfig(dirichlet_alpha=0.3, dirichlet_weight=0.5)
    a, b = explore(p, cfg, random.Random(7)), explore(p, cfg, random.Random(7))
    assert a == b and a != p and abs(sum(a) - 1) < 1e-9  # seeded noise: deterministic
    # PUCT: an unvisited action with a high prior goes first; a visited good action is exploited
    assert puct_pick([0.2, 0.8], [0, 0], [0.0, 0.0], 1.5, 0.0, 1.0, 0.5) == 1
    assert puct_pick([0.5, 0.5], [3, 3], [3.0, 0.0], 1.5, 0.0, 1.0, 0.5) == 0
    # with no exploration weight the better mean wins whatever the prior
    assert puct_pick([0.9, 0.1], [2, 2], [0.0, 2.0], 0.0, 0.0, 1.0, 0.5) == 1


@pytest.mark.parametrize("strategy", ["latent", "mcts"])
@pytest.mark.parametrize("actions", ["sandbox", None])
def test_latent_strategies_write_valid_trees_with_branches(scripted, tmp_path, strategy, actions):
    be = scripted()
    latent = {"action_set": actions, "k": 3, "replies": 2, "simulations": 5, "batch": 2}
    out = _search(be, tmp_path / "a", strategy=strategy, turns=2, latent=latent)
    trees = _trees(out)
    assert len(trees) == 3
    for nodes in trees:
        path = best_path(nodes)
        assert [n.role for n in path] == ["user", "assistant", "user", "assistant"]
        for parent, kept in ((path[0], path[1]), (path[2], path[3])):
            br = parent.branches
            assert br and 1 <= len(br) <= 3
            assert abs(sum(b.prior for b in br) - 1) < 1e-4
            assert sum(b.chosen for b in br) == 1 and br[kept.branch].chosen
            kids = [n for n in nodes if n.parent == parent.id and n.role == "assistant"]
            assert sorted(r for b in br for r in b.replies) == sorted(n.id for n in kids)
            assert sum(b.visits for b in br) == len(kids) == (6 if strategy == "latent" else 5)
            assert [n for n in kids if n.kept] == [kept]
            assert all(n.sampling["prefill"] for n in kids) and kept.score is not None
            if actions == "sandbox":  # a closed set: the forced fields are the action's
                assert {(n.action.motivation, n.action.emotion) for n in kids} <= {
                    (a.motivation, a.emotion) for a in load_action_set("sandbox")}
            if strategy == "mcts":  # the kept action is the most visited one
                assert br[kept.branch].visits == max(b.visits for b in br)
    # proposals of all seeds are scored in one batched pass
    assert be.batches("score")[0] == 3
    # the existing exports read these trees: transcripts, and action-level pairs
    from sage_dialog.stages import prefs
    from sage_dialog.stages.search.search import export_transcripts

    assert export_transcripts(out) == 3
    pairs, _ = prefs.build(prefs.read_trees(out / "trees"), prefs.Settings(level="action"))
    assert all(p.chosen.state == p.rejected.state and p.tag_diff for p in pairs)
    meta = json.loads((out / "trees" / "seed-0000.meta.json").read_text())
    assert meta["strategy"] == strategy and meta["generated_tokens"] > 0
    # deterministic: the same search again gives the same trees
    again = _search(scripted(), tmp_path / "b", strategy=strategy, turns=2, latent=latent)
    assert [[n.model_dump() for n in t] for t in _trees(again)] == [[n.model_dump() for n in t] for t in trees]


@pytest.mark.parametrize("strategy", ["latent", "mcts"])
def test_latent_search_resumes_from_its_journal(scripted, tmp_path, strategy):
    latent = {"action_set": "sandbox", "k": 3, "simulations": 4, "batch": 2}
    full_be = scripted()
    full = _search(full_be, tmp_path / "full", strategy=strategy, turns=3, latent=latent)

    dying = scripted(crash_at_call=7)  # killed in the middle, after some calls were journaled
    with pytest.raises(RuntimeError, match="simulated crash"):
        _search(dying, tmp_path / "resumed", strategy=strategy, turns=3, latent=latent)
    assert not (tmp_path / "resumed" / "best.jsonl").exists()
    again = scripted()
    resumed = _search(again, tmp_path / "resumed", strategy=strategy, turns=3, latent=latent)
    assert [[n.model_dump() for n in t] for t in _trees(resumed)] == [[n.model_dump() for n in t] for t in _trees(full)]
    # nothing asked twice
    assert len(dying.history) > 0 and len(dying.history) + len(again.history) == len(full_be.history)
    # other latent options are another search: refused on the same folder
    with pytest.raises(UserError, match="different config"):
        _search(scripted(), tmp_path / "resumed", strategy=strategy, turns=3, latent={**latent, "k": 2})


def test_mcts_spends_its_share_of_the_token_budget(scripted, tmp_path):
    latent = {"action_set": "sandbox", "k": 3, "simulations": 64, "batch": 1}
    out = _search(scripted(), tmp_path / "small", seeds=SEEDS[:1], strategy="mcts", turns=2, budget_tokens=600,
                  latent=latent)
    big = _search(scripted(), tmp_path / "big", seeds=SEEDS[:1], strategy="mcts", turns=2, budget_tokens=3000,
                  latent=latent)
    small_meta = json.loads((out / "trees" / "seed-0000.meta.json").read_text())
    big_meta = json.loads((big / "trees" / "seed-0000.meta.json").read_text())
    n_small = len([n for n in _trees(out)[0] if n.role == "assistant"])
    n_big = len([n for n in _trees(big)[0] if n.role == "assistant"])
    assert 2 <= n_small < n_big < 128  # more budget, more simulations; both finish their turns
    assert len([n for n in best_path(_trees(out)[0]) if n.role == "assistant"]) == 2
    assert small_meta["tokens"] <= 600 * 1.5 and big_meta["tokens"] <= 3000 * 1.2


def test_latent_needs_a_scoring_backend(scripted, tmp_path):
    no_score = scripted()
    no_score.scoring = False
    with pytest.raises(UserError, match="cannot score"):
        _search(no_score, tmp_path, strategy="latent", turns=1)
    assert not (tmp_path / "search.json").exists()
    with pytest.raises(UserError, match="no such label-set file"):
        _search(scripted(), tmp_path, strategy="mcts", turns=1, latent={"action_set": "nope"})


def test_proposals_on_a_real_model(tiny_model, tmp_path):
    """Closed set: priors are the model's own normalised scores of the action prefills after its state block."""
    import asyncio

    from sage_dialog.backends.base import ScoreRequest, load_backend
    from sage_dialog.core import sac
    from sage_dialog.roles.rollout import history_messages
    from sage_dialog.sandbox.oracles import oracle_for
    from sage_dialog.stages.search.actions import propose
    from sage_dialog.stages.search.context import Roles, SearchContext
    from sage_dialog.stages.search.tree import node_turn

    be = load_backend(f"hf:{tiny_model}")
    cfg = SearchConfig(strategy="mcts", turns=1, latent=LatentConfig(action_set="sandbox", k=3))
    s = SearchContext(0, SEEDS[0], cfg, Roles(be, oracle_for("user"), oracle_for("selector")), tmp_path / "j.jsonl",
                      action_set=load_action_set("sandbox"))
    root = s.add("user", SEEDS[0], None)
    props = asyncio.run(propose(s, [root]))
    assert len(props) == 3 and abs(sum(p.prior for p in props) - 1) < 1e-9
    head = props[0].prefill[: props[0].prefill.index("{a_motivation")]
    assert all(p.prefill.startswith(head) for p in props)
    options = [sac.action_prefill(a) for a in load_action_set("sandbox")]
    [sc] = asyncio.run(be.score([ScoreRequest(messages=history_messages([node_turn(root)]), options=options,
                                              prefill=head or None)]))
    full = normalise(sc.logprobs)
    best3 = top_k(full, 3)
    assert [p.action for p in props] == [load_action_set("sandbox")[i] for i in best3]
    total = sum(full[i] for i in best3)
    assert [round(p.prior, 6) for p in props] == [round(full[i] / total, 6) for i in best3]
    # open vocabulary: sampled blocks, deduplicated, at most k
    s.cfg = SearchConfig(strategy="mcts", turns=1, latent=LatentConfig(k=3, open_samples=6))
    s.action_set = None
    props = asyncio.run(propose(s, [root]))
    assert 1 <= len(props) <= 3 and len({p.prefill for p in props}) == len(props)


@pytest.mark.slow
def test_cli_mcts_on_a_real_model(tiny_model, tmp_path):
    import subprocess
    import sys

    seeds = tmp_path / "seeds.txt"
    seeds.write_text("I feel sad about my exam.\nMy boss makes me so angry.\n", encoding="utf-8")
    cmd = [sys.executable, "-m", "sage_dialog", "search", str(seeds), "--assistant", f"hf:{tiny_model}",
           "--user", "oracle", "--judge", "oracle", "--strategy", "mcts", "--actions", "sandbox", "--k-actions", "3",
           "--simulations", "3", "--turns", "2", "--max-tokens", "8", "--no-progress", "-o", str(tmp_path / "out")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    for p in sorted((tmp_path / "out" / "trees").glob("seed-*.jsonl")):
        nodes = read_tree(p)
        assert nodes[0].branches and sum(b.visits for b in nodes[0].branches) == 3
    r = subprocess.run([*cmd[:-1], str(tmp_path / "bad"), "--actions", str(tmp_path / "none.json")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "none.json: no such action-set file" in r.stderr and "Traceback" not in r.stderr


def test_run_config_section_takes_the_latent_options():
    cfg = SearchConfig.model_validate({"strategy": "mcts", "turns": 2,
                                       "latent": {"action_set": "esconv_strategies", "k": 3, "simulations": 6}})
    assert cfg.latent.k == 3 and cfg.latent.simulations == 6
    with pytest.raises(ValueError, match="simulation"):
        SearchConfig.model_validate({"strategy": "mcts", "latent": {"simulation": 6}})


@pytest.mark.parametrize("strategy", ["latent", "mcts"])
def test_rollout_values_judge_the_continuations(scripted, tmp_path, strategy):
    latent = {"action_set": "sandbox", "k": 2, "simulations": 2, "value": "rollout"}
    out = _search(scripted(), tmp_path, seeds=SEEDS[:1], strategy=strategy, turns=2, lookahead_depth=1,
                  latent=latent)
    nodes = _trees(out)[0]
    rollouts = [n for n in nodes if n.sampling.get("lookahead")]
    assert rollouts and not any(n.kept for n in rollouts)
    path = best_path(nodes)
    assert [n.role for n in path] == ["user", "assistant", "user", "assistant"]
    # the judge saw the continuations: the kept reply's decision was made on the rolled-forward text
    assert all(n.decision is not None for n in path[1::2])


@pytest.mark.parametrize("strategy", ["latent", "mcts"])
def test_generate_mode_judge_gives_one_zero_values(scripted, tmp_path, strategy):
    latent = {"action_set": "sandbox", "k": 3, "simulations": 3, "batch": 3}
    out = _search(scripted(), tmp_path, seeds=SEEDS[:2], strategy=strategy, turns=1, mode="generate", latent=latent)
    for nodes in _trees(out):
        kids = [n for n in nodes if n.role == "assistant"]
        assert sorted(n.score for n in kids) == [0.0, 0.0, 1.0]  # the judge's choice is worth 1, the rest 0
        kept = next(n for n in kids if n.kept)
        assert kept.score == 1.0 and kept.decision.mode == "generate" and kept.decision.outcome == "chosen"


def test_mcts_never_judges_a_lone_last_reply(scripted, tmp_path):
    latent = {"action_set": "sandbox", "k": 3, "simulations": 4, "batch": 3}
    out = _search(scripted(), tmp_path, seeds=SEEDS[:1], strategy="mcts", turns=1, latent=latent)
    kids = [n for n in _trees(out)[0] if n.role == "assistant"]
    assert len(kids) == 4 and len({n.sampling["seed"] for n in kids}) == 4
    # one round of four: every reply was judged against the other three
    assert all(len(n.decision.order) == 4 for n in kids)

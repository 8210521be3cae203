"""Statistics on cases with a known answer."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sage_dialog.core.schema import Verdict
from sage_dialog.stages.compare import stats


def _v(seed: str, winner: str | None, *, a: str = "m1", b: str = "m2", judge: str = "j", first: str = "a",
       la: int | None = None, lb: int | None = None) -> Verdict:
    return Verdict(seed=seed, model_a=a, model_b=b, judge=judge, shown_first=first,  # type: ignore[arg-type]
                   winner=winner, parsed=winner is not None, length_a=la, length_b=lb)  # type: ignore[arg-type]


def test_bootstrap_interval_of_a_70_30_split_matches_the_normal_approximation() -> None:
    n = 2000
    clusters = [[1.0]] * int(0.7 * n) + [[0.0]] * int(0.3 * n)
    est, lo, hi = stats.cluster_bootstrap(clusters, n_boot=4000, seed=1)
    assert est == pytest.approx(0.7)
    assert lo < 0.7 < hi
    expected = 2 * stats.Z95 * math.sqrt(0.7 * 0.3 / n)  # ~0.0402
    assert (hi - lo) == pytest.approx(expected, rel=0.08)
    assert (lo + hi) / 2 == pytest.approx(0.7, abs=0.004)


def test_win_rate_interval_from_verdicts_and_tie_counts_half() -> None:
    vs = [_v(f"s{i}", "a") for i in range(70)] + [_v(f"t{i}", "b") for i in range(30)]
    vs += [_v("u0", "tie"), _v("u1", None)]
    (ps,) = stats.pair_stats(vs, n_boot=2000)
    assert (ps.wins, ps.losses, ps.ties, ps.unparsed, ps.verdicts) == (70, 30, 1, 1, 102)
    assert ps.win_rate == pytest.approx(70.5 / 101)
    assert ps.ci_low < ps.win_rate < ps.ci_high
    assert 0.12 < ps.ci_high - ps.ci_low < 0.24  # ~ 2*1.96*sqrt(.7*.3/101) = 0.179


def test_clustered_seeds_widen_the_interval() -> None:
    # the same 100 outcomes, but judged 4 times per seed: 25 independent seeds, not 100
    flat = [[1.0]] * 70 + [[0.0]] * 30
    clustered = [[1.0] * 4] * 17 + [[0.0] * 4] * 8
    _, lo1, hi1 = stats.cluster_bootstrap(flat, seed=0)
    _, lo2, hi2 = stats.cluster_bootstrap(clustered, seed=0)
    assert hi2 - lo2 > 1.5 * (hi1 - lo1)


def test_consensus_counts_only_where_every_judge_and_order_agree() -> None:
    vs = []
    for j in ("j1", "j2"):
        for first in ("a", "b"):
            vs.append(_v("agree_a", "a", judge=j, first=first))
            vs.append(_v("agree_tie", "tie", judge=j, first=first))
    vs += [_v("split", "a", judge="j1"), _v("split", "b", judge="j1", first="b"),
           _v("split", "a", judge="j2"), _v("split", "a", judge="j2", first="b")]
    c = stats.consensus_counts(vs)
    assert (c.A, c.B, c.M, c.labels, c.disagreed) == (1, 0, 1, 3, 1)


def test_judge_consistency_flip_rate_and_position_bias() -> None:
    vs = []
    # a judge that always picks the dialog shown first: every swap flips its verdict
    for i in range(20):
        vs += [_v(f"s{i}", "a", judge="first", first="a"), _v(f"s{i}", "b", judge="first", first="b")]
    # a judge that always picks model a: perfectly consistent, no position bias
    for i in range(20):
        vs += [_v(f"s{i}", "a", judge="fair", first="a"), _v(f"s{i}", "a", judge="fair", first="b")]
    res = {c.judge: c for c in stats.judge_consistency(vs)}
    assert res["first"].flip_rate == 1.0 and res["first"].first_rate == 1.0
    assert res["fair"].flip_rate == 0.0 and res["fair"].consistent_rate == 1.0
    assert res["fair"].first_rate == pytest.approx(0.5)


def test_length_controlled_view_removes_a_pure_length_preference() -> None:
    # the judge prefers the longer dialog; m1 is longer half the time: equal-length win rate ~0.5
    rng = np.random.default_rng(0)
    vs = []
    for i in range(300):
        la, lb = int(rng.integers(20, 200)), int(rng.integers(20, 200))
        p = 1 / (1 + math.exp(-(la - lb) / 30))
        vs.append(_v(f"s{i}", "a" if rng.random() < p else "b", la=la, lb=lb))
    (ps,) = stats.pair_stats(vs, n_boot=500)
    lc = ps.length_controlled
    assert lc is not None
    assert lc.ci_low < 0.5 < lc.ci_high
    assert lc.slope_per_100_words > 1.5  # true slope 100/30 = 3.3
    shorter, _, longer = lc.bins
    assert shorter["win_rate"] < 0.3 < 0.7 < longer["win_rate"]


def test_bradley_terry_recovers_the_order_of_three_models() -> None:
    rng = np.random.default_rng(0)
    strength = {"weak": -1.0, "mid": 0.0, "strong": 1.0}
    models = list(strength)
    vs = []
    for i in range(150):
        for x in range(3):
            for y in range(x + 1, 3):
                a, b = models[x], models[y]
                p = 1 / (1 + math.exp(-(strength[a] - strength[b])))
                vs.append(_v(f"s{i}", "a" if rng.random() < p else "b", a=a, b=b))
    r = stats.bradley_terry(models, vs, n_boot=200)
    assert r.rank == [3, 2, 1]
    for i, m in enumerate(models):
        assert r.ci_low[i] < strength[m] < r.ci_high[i] or abs(r.theta[i] - strength[m]) < 0.25
    assert r.rank_low[2] == 1 and r.rank_high[0] == 3
    assert sum(r.theta) == pytest.approx(0.0, abs=1e-9)


def test_no_parsed_verdicts_gives_no_estimate_and_no_ranking(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from sage_dialog.commands.compare import _print
    from sage_dialog.stages.compare.report import build_report

    models = ["m1", "m2", "m3"]
    vs = [_v(f"s{i}", None, a=a, b=b, first=f) for i in range(4) for a, b in (("m1", "m2"), ("m1", "m3"), ("m2", "m3"))
          for f in ("a", "b")]
    ps = stats.pair_stats(vs, n_boot=200)
    assert all(p.parsed == 0 and p.unparsed == 8 and math.isnan(p.win_rate) for p in ps)
    assert stats.bradley_terry(models, vs, n_boot=100) is None
    rep = build_report(tmp_path, models=models, verdicts=vs, dialogs=None, n_boot=200)
    assert rep.ranking is None
    md = rep.markdown_path.read_text()
    assert "no parsed verdicts" in md and "No ranking: no parsed verdicts." in md
    assert "nan" not in md.lower() and "1–1" not in md
    page = rep.html_path.read_text()
    assert "No ranking: no parsed verdicts." in page and ">no parsed verdicts<" in page
    _print(rep)
    out = capsys.readouterr().out
    assert "nan" not in out and out.count("no parsed verdicts") == 4 and "ranking: none" in out


def test_rank_ranges_overlap_when_the_intervals_overlap() -> None:
    assert stats.rank_ranges([0.5, -0.2, -2.0], [1.5, 0.8, -1.0]) == ([1, 1, 3], [2, 2, 3])
    nan = math.nan
    assert stats.rank_ranges([nan, 0.0, 1.0], [nan, 0.5, 2.0]) == ([1, 2, 1], [3, 3, 2])
    # three equally strong models (every verdict a tie): one shared rank, not 1, 2, 3 by model order
    models = ["m1", "m2", "m3"]
    vs = [_v(f"s{i}", "tie", a=a, b=b) for i in range(5) for a, b in (("m1", "m2"), ("m1", "m3"), ("m2", "m3"))]
    r = stats.bradley_terry(models, vs, n_boot=100)
    assert r is not None and r.rank == [1, 1, 1]
    assert r.rank_low == [1, 1, 1] and r.rank_high == [3, 3, 3]
    # a model that was never judged (its verdicts all unparsed) has no strength and the full range
    m1_m2 = [v for v in vs if v.model_b == "m2"]
    r2 = stats.bradley_terry(models, [*m1_m2, _v("s0", None, a="m1", b="m3"), _v("s1", None, a="m2", b="m3")],
                             n_boot=100)
    assert r2 is not None and math.isnan(r2.theta[2]) and (r2.rank_low[2], r2.rank_high[2]) == (1, 3)
    assert r2.parsed == [5, 5, 0]

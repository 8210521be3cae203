"""Statistics over pairwise verdicts: win rates you can trust, and the biases that fool them.

Everything here works on :class:`~sage_dialog.core.schema.Verdict` records (one judge, one order, one
seed, one pair of models) and returns plain dataclasses that serialise to JSON (``asdict``):

* :func:`pair_stats` - win / tie / loss / unparsed for each pair of models, the win rate
  (ties count half, unparsed verdicts are counted but not scored) with a bootstrap interval, and
  the original SAGE consensus rule (a seed counts only where every judge in every order agrees);
* :func:`judge_consistency` - per judge, how often swapping the two dialogs flips its verdict, and
  how often it picks whichever dialog it was shown first;
* :func:`length_stats` and the length-controlled view inside :func:`pair_stats` - a logistic
  regression of the outcome on the length difference (win rate at equal length) and win rates
  stratified by which dialog is longer, because LLM judges like long answers;
* :func:`bradley_terry` - a ranking of more than two models with bootstrap intervals.

No estimate without data: a pair with no parsed verdict has no win rate (NaN, shown as "no parsed
verdicts"), there is no ranking without parsed verdicts, a model without any has no strength, and
two models share ranks in their rank ranges whenever their strength intervals overlap.

Bootstraps resample *seeds* (clusters), not verdicts: the verdicts of one seed (both orders,
several judges) are not independent, and treating them as such would make intervals too narrow.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sage_dialog.core.schema import Dialog, Verdict

Z95 = 1.959963984540054


def outcome_score(winner: str | None) -> float | None:
    """Score of a verdict for ``model_a``: 1 win, 0.5 tie, 0 loss, None when it did not parse."""
    return {"a": 1.0, "tie": 0.5, "b": 0.0}.get(winner) if winner is not None else None


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` percentile interval of bootstrap ``samples`` (NaNs dropped)."""
    s = samples[~np.isnan(samples)]
    if s.size == 0:
        return (math.nan, math.nan)
    lo, hi = np.quantile(s, [(1 - level) / 2, 1 - (1 - level) / 2])
    return (float(lo), float(hi))


def cluster_bootstrap(
    clusters: Sequence[Sequence[float]],
    stat: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """Mean of all values and a percentile bootstrap interval, resampling whole clusters.

    ``clusters[k]`` are the scores of one seed. By default the statistic is the pooled mean
    (sum of scores / number of scores in the resample); ``stat(sums, counts)`` may replace it and
    gets ``(n_boot, n_clusters)`` arrays. Returns ``(estimate, low, high)``.
    """
    sums = np.array([float(sum(c)) for c in clusters])
    counts = np.array([float(len(c)) for c in clusters])
    if counts.sum() == 0:
        return (math.nan, math.nan, math.nan)
    estimate = float(sums.sum() / counts.sum())
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(clusters), size=(n_boot, len(clusters)))
    if stat is None:
        with np.errstate(invalid="ignore", divide="ignore"):
            samples = sums[idx].sum(axis=1) / counts[idx].sum(axis=1)
    else:
        samples = stat(sums[idx], counts[idx])
    lo, hi = percentile_interval(samples, level)
    return (estimate, lo, hi)


# ---------------------------------------------------------------------------------------------
# lengths


def dialog_length(dialog: Dialog) -> int:
    """Words the assistant wrote in a dialog (tags are expected to be stripped already)."""
    return sum(len(t.text.split()) for t in dialog.turns if t.role == "assistant")


@dataclass
class LengthStats:
    model: str
    dialogs: int
    mean_words: float
    median_words: float
    mean_words_per_turn: float


def length_stats(dialogs_by_model: Mapping[str, Sequence[Dialog]]) -> list[LengthStats]:
    """Assistant words per dialog (mean, median) and per assistant turn, for each model."""
    out = []
    for model, dialogs in dialogs_by_model.items():
        lens = [dialog_length(d) for d in dialogs]
        turns = sum(1 for d in dialogs for t in d.turns if t.role == "assistant")
        out.append(LengthStats(
            model=model,
            dialogs=len(dialogs),
            mean_words=float(np.mean(lens)) if lens else math.nan,
            median_words=float(np.median(lens)) if lens else math.nan,
            mean_words_per_turn=float(sum(lens) / turns) if turns else math.nan,
        ))
    return out


def logistic_fit(x: np.ndarray, y: np.ndarray, *, ridge: float = 1e-3, iters: int = 50) -> tuple[float, float]:
    """Intercept and slope of a logistic regression of ``y`` (in [0, 1]; ties as 0.5) on ``x``.

    Newton / IRLS with a tiny ridge so that a perfectly separated sample gives large but finite
    coefficients instead of diverging.
    """
    X = np.column_stack([np.ones_like(x), x])
    beta = np.zeros(2)
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(X @ beta)))
        w = p * (1 - p)
        grad = X.T @ (y - p) - ridge * beta
        hess = (X * w[:, None]).T @ X + ridge * np.eye(2)
        step = np.linalg.solve(hess, grad)
        beta = beta + step
        if np.max(np.abs(step)) < 1e-9:
            break
    return float(beta[0]), float(beta[1])


def _sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v)) if v > -700 else 0.0


@dataclass
class LengthControlled:
    """Win rate of ``model_a`` at equal length (logistic regression on the length difference)."""

    win_rate: float
    ci_low: float
    ci_high: float
    slope_per_100_words: float  # log-odds change per 100 more words than the other dialog
    n: int
    bins: list[dict[str, Any]] = field(default_factory=list)


_BINS = (("a shorter", -math.inf, -0.1), ("similar (±10%)", -0.1, 0.1), ("a longer", 0.1, math.inf))


def length_controlled(
    seeds: Sequence[str], scores: np.ndarray, diff: np.ndarray, rel: np.ndarray, *, n_boot: int = 300, seed: int = 0
) -> LengthControlled | None:
    """Win rate of ``model_a`` at equal length, with an interval from resampling seeds.

    ``scores`` are verdict outcomes (1 / 0.5 / 0), ``diff`` the word differences ``len_a - len_b``,
    ``rel`` the same relative to the longer dialog (for the three bins).
    """
    if len(scores) < 2:
        return None
    x = diff / 100.0
    b0, b1 = logistic_fit(x, scores)
    # bootstrap over seeds: refit on resampled clusters
    groups: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(seeds):
        groups[s].append(i)
    members = list(groups.values())
    rng = np.random.default_rng(seed)
    samples = np.empty(n_boot)
    for k in range(n_boot):
        pick = rng.integers(0, len(members), size=len(members))
        ids = np.concatenate([np.asarray(members[j]) for j in pick])
        samples[k] = _sigmoid(logistic_fit(x[ids], scores[ids])[0])
    lo, hi = percentile_interval(samples)
    bins = []
    for label, a, b in _BINS:
        m = (rel >= a) & (rel < b)
        bins.append({"bin": label, "n": int(m.sum()),
                     "win_rate": float(scores[m].mean()) if m.any() else None})
    return LengthControlled(win_rate=_sigmoid(b0), ci_low=lo, ci_high=hi, slope_per_100_words=b1,
                            n=len(scores), bins=bins)


# ---------------------------------------------------------------------------------------------
# per pair


@dataclass
class Consensus:
    """The original SAGE rule: count a seed only where every judge in every order says the same.

    ``A``/``B`` are wins of ``model_a``/``model_b``; ``M`` agreed ties or unreadable answers.
    """

    A: int = 0
    B: int = 0
    M: int = 0
    labels: int = 0
    disagreed: int = 0

    @property
    def agreed(self) -> int:
        return self.A + self.B + self.M


@dataclass
class PairStats:
    model_a: str
    model_b: str
    unit: str
    verdicts: int
    wins: int
    ties: int
    losses: int
    unparsed: int
    seeds: int
    win_rate: float
    ci_low: float
    ci_high: float
    consensus: Consensus
    length_controlled: LengthControlled | None = None

    @property
    def parsed(self) -> int:
        """Verdicts that said something (win, tie or loss); the win rate rests on these alone."""
        return self.verdicts - self.unparsed


def _letter(v: Verdict) -> str:
    return {"a": "A", "b": "B"}.get(v.winner or "", "M")


def consensus_counts(verdicts: Sequence[Verdict]) -> Consensus:
    """The original consensus rule over verdicts of one pair of models (tie / unparsed = ``M``).

    The "files" of the original are the (judge, order) combinations; a combination with no
    verdict for a seed counts as ``M`` there, as a label missing from a judge file does.
    """
    files = sorted({(v.judge, v.shown_first) for v in verdicts})
    by_label: dict[tuple[str, int | None], dict[tuple[str, str], str]] = defaultdict(dict)
    for v in verdicts:
        by_label[(v.seed, v.turn)].setdefault((v.judge, v.shown_first), _letter(v))
    c = Consensus(labels=len(by_label))
    for answers in by_label.values():
        letters = {answers.get(f, "M") for f in files}
        if len(letters) == 1:
            letter = letters.pop()
            setattr(c, letter, getattr(c, letter) + 1)
        else:
            c.disagreed += 1
    return c


def pair_stats(
    verdicts: Iterable[Verdict], *, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> list[PairStats]:
    """Statistics for every (model_a, model_b, unit) found in ``verdicts``, in order of appearance."""
    groups: dict[tuple[str, str, str], list[Verdict]] = {}
    for v in verdicts:
        groups.setdefault((v.model_a, v.model_b, v.unit), []).append(v)
    out = []
    for (ma, mb, unit), vs in groups.items():
        by_seed: dict[str, list[float]] = defaultdict(list)
        rows: list[tuple[str, float, int, int]] = []
        for v in vs:
            s = outcome_score(v.winner)
            key = v.seed if v.turn is None else f"{v.seed}#{v.turn}"
            by_seed.setdefault(key, [])
            if s is None:
                continue
            by_seed[key].append(s)
            if v.length_a is not None and v.length_b is not None:
                rows.append((v.seed, s, v.length_a, v.length_b))
        est, lo, hi = cluster_bootstrap(list(by_seed.values()), n_boot=n_boot, seed=seed, level=level)
        lc = None
        if rows:
            la = np.array([r[2] for r in rows], float)
            lb = np.array([r[3] for r in rows], float)
            rel = (la - lb) / np.maximum(np.maximum(la, lb), 1.0)
            lc = length_controlled([r[0] for r in rows], np.array([r[1] for r in rows]), la - lb, rel,
                                    n_boot=max(100, n_boot // 10), seed=seed)
        out.append(PairStats(
            model_a=ma, model_b=mb, unit=unit, verdicts=len(vs),
            wins=sum(v.winner == "a" for v in vs), ties=sum(v.winner == "tie" for v in vs),
            losses=sum(v.winner == "b" for v in vs), unparsed=sum(v.winner is None for v in vs),
            seeds=len({v.seed for v in vs}), win_rate=est, ci_low=lo, ci_high=hi,
            consensus=consensus_counts(vs), length_controlled=lc,
        ))
    return out


# ---------------------------------------------------------------------------------------------
# judges


@dataclass
class JudgeConsistency:
    """How one judge behaves when the order of the two dialogs is swapped.

    ``flip_rate`` = flipped / (both orders parsed): the share of decisions that reverse with
    position (one order says ``a``, the other ``b``). ``consistent_rate`` counts identical winners
    (ties included). ``first_rate`` is how often a decisive verdict picked the dialog shown first
    (0.5 for an unbiased judge).
    """

    judge: str
    verdicts: int
    unparsed: int
    both_orders: int
    consistent: int
    flipped: int
    partial: int
    consistent_rate: float
    flip_rate: float
    first_rate: float
    first_rate_ci: tuple[float, float] = (math.nan, math.nan)


def judge_consistency(verdicts: Iterable[Verdict], *, n_boot: int = 1000, seed: int = 0) -> list[JudgeConsistency]:
    by_judge: dict[str, list[Verdict]] = {}
    for v in verdicts:
        by_judge.setdefault(v.judge, []).append(v)
    out = []
    for judge, vs in by_judge.items():
        pairs: dict[tuple[Any, ...], dict[str, Verdict]] = defaultdict(dict)
        first: dict[str, list[float]] = defaultdict(list)
        for v in vs:
            pairs[(v.model_a, v.model_b, v.unit, v.seed, v.turn)][v.shown_first] = v
            if v.winner in ("a", "b"):
                first[v.seed].append(1.0 if v.winner == v.shown_first else 0.0)
        both = consistent = flipped = partial = 0
        for d in pairs.values():
            if "a" not in d or "b" not in d or d["a"].winner is None or d["b"].winner is None:
                continue
            both += 1
            wa, wb = d["a"].winner, d["b"].winner
            if wa == wb:
                consistent += 1
            elif {wa, wb} == {"a", "b"}:
                flipped += 1
            else:
                partial += 1
        f_est, f_lo, f_hi = cluster_bootstrap(list(first.values()), n_boot=n_boot, seed=seed)
        out.append(JudgeConsistency(
            judge=judge, verdicts=len(vs), unparsed=sum(v.winner is None for v in vs), both_orders=both,
            consistent=consistent, flipped=flipped, partial=partial,
            consistent_rate=consistent / both if both else math.nan,
            flip_rate=flipped / both if both else math.nan,
            first_rate=f_est, first_rate_ci=(f_lo, f_hi),
        ))
    return out


# ---------------------------------------------------------------------------------------------
# Bradley-Terry


@dataclass
class Ranking:
    """Bradley-Terry strengths (log scale, mean 0) with bootstrap intervals and rank intervals.

    ``rank`` is shared by equal strengths; the rank range of a model runs from 1 + the number of models
    whose interval lies wholly above its own to the number of models whose interval does not lie
    wholly below it, so overlapping intervals give overlapping ranges. A model without parsed
    verdicts has NaN strength and interval and the full range.
    """

    models: list[str]
    theta: list[float]
    ci_low: list[float]
    ci_high: list[float]
    rank: list[int]
    rank_low: list[int]
    rank_high: list[int]
    expected_win_rate: list[float]  # against an average opponent (theta 0)
    parsed: list[int] = field(default_factory=list)  # parsed verdicts each model took part in


def rank_ranges(low: Sequence[float], high: Sequence[float]) -> tuple[list[int], list[int]]:
    """Rank intervals from strength intervals (higher = better): rank 1 is the strongest.

    A model ranks no better than 1 + the models surely stronger (their low end above its high end)
    and no worse than the models not surely weaker. NaN intervals overlap everything.
    """
    k = len(low)

    def above(j: int, i: int) -> bool:  # j surely stronger than i
        return not (math.isnan(low[j]) or math.isnan(high[i])) and low[j] > high[i]

    lo = [1 + sum(above(j, i) for j in range(k) if j != i) for i in range(k)]
    hi = [k - sum(above(i, j) for j in range(k) if j != i) for i in range(k)]
    return lo, hi


def bt_fit(models: Sequence[str], wins: np.ndarray, *, prior: float = 0.1, iters: int = 500) -> np.ndarray:
    """Log-strengths from a win matrix (``wins[i, j]`` = wins of i over j, ties split half-half).

    Minorisation-maximisation (Hunter 2004). ``prior`` virtual ties between every pair keep the
    estimate finite when a model never loses and tie the graph together when pairs are missing.
    """
    k = len(models)
    w = wins + prior * (1 - np.eye(k)) / 2
    n = w + w.T
    p = np.ones(k)
    total = w.sum(axis=1)
    for _ in range(iters):
        denom = (n / (p[:, None] + p[None, :])).sum(axis=1)
        new = total / denom
        new = new / np.exp(np.mean(np.log(new)))
        if np.max(np.abs(new - p)) < 1e-10:
            p = new
            break
        p = new
    theta: np.ndarray = np.log(p)
    return theta - theta.mean()


def _win_matrix(models: Sequence[str], verdicts: Sequence[Verdict]) -> np.ndarray:
    ix = {m: i for i, m in enumerate(models)}
    w = np.zeros((len(models), len(models)))
    for v in verdicts:
        s = outcome_score(v.winner)
        if s is None or v.model_a not in ix or v.model_b not in ix:
            continue
        i, j = ix[v.model_a], ix[v.model_b]
        w[i, j] += s
        w[j, i] += 1 - s
    return w


def bradley_terry(
    models: Sequence[str], verdicts: Iterable[Verdict], *, n_boot: int = 500, seed: int = 0, level: float = 0.95
) -> Ranking | None:
    """Fit Bradley-Terry on all parsed verdicts; intervals by resampling seeds. None without a parsed verdict."""
    vs = [v for v in verdicts if v.winner is not None and v.model_a in models and v.model_b in models]
    if not vs:
        return None
    parsed = [sum(m in (v.model_a, v.model_b) for v in vs) for m in models]
    theta = bt_fit(models, _win_matrix(models, vs))
    by_seed: dict[str, list[Verdict]] = defaultdict(list)
    for v in vs:
        by_seed[v.seed].append(v)
    # one win matrix per seed; a bootstrap replicate is the sum over its resampled seeds
    per_seed = np.stack([_win_matrix(models, group) for group in by_seed.values()])
    rng = np.random.default_rng(seed)
    boot = np.empty((n_boot, len(models)))
    for b in range(n_boot):
        counts = np.bincount(rng.integers(0, len(per_seed), size=len(per_seed)), minlength=len(per_seed))
        boot[b] = bt_fit(models, np.tensordot(counts, per_seed, axes=1))
    has = [n > 0 for n in parsed]  # a model never judged has only the prior: no estimate
    th = [float(t) if h else math.nan for t, h in zip(theta, has, strict=True)]
    lo = [percentile_interval(boot[:, i], level)[0] if has[i] else math.nan for i in range(len(models))]
    hi = [percentile_interval(boot[:, i], level)[1] if has[i] else math.nan for i in range(len(models))]
    # rank 1 = strongest; equal strengths share a rank (ties are not broken by model order)
    rank = [1 + sum(th[j] > th[i] + 1e-9 for j in range(len(models)) if has[j]) if has[i] else len(models)
            for i in range(len(models))]
    rank_low, rank_high = rank_ranges(lo, hi)
    return Ranking(
        models=list(models), theta=th, ci_low=lo, ci_high=hi, rank=rank, rank_low=rank_low, rank_high=rank_high,
        expected_win_rate=[_sigmoid(t) if not math.isnan(t) else math.nan for t in th], parsed=parsed,
    )

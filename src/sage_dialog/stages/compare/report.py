"""The comparison report: ``summary.json``, ``report.md`` and one self-contained ``report.html``.

The HTML page has no external assets (no CDN, no fonts, no scripts): plots are inline SVG drawn
here - win rates with bootstrap intervals, the outcome split of every pair, the Bradley-Terry
ranking, each judge's order consistency and position bias, its trust figures (injection canaries
and repeat stability, ``judge_trust.json`` from :mod:`.trust`) with a plain sentence per judge, and
dialog lengths next to the length-controlled win rate. Benchmark results of ``sage-dialog eval`` or
the loop's benchmarks stage (``eval_results.json`` in the same folder) are added as tables, EQ-Bench
(emotional intelligence) next to the win rates.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sage_dialog.core import io
from sage_dialog.core.schema import Dialog, Verdict
from sage_dialog.stages.compare import stats, trust

TRUST_FILE = "judge_trust.json"

GREEN, GREY, RED, PALE, BLUE = "#2e7d32", "#9e9e9e", "#c62828", "#e0e0e0", "#1565c0"


@dataclass
class Report:
    """What a comparison produced: the statistics and where the files are."""

    out_dir: Path
    models: list[str]
    pairs: list[stats.PairStats]
    judges: list[stats.JudgeConsistency]
    by_judge: dict[str, list[stats.PairStats]] = field(default_factory=dict)  # only with several judges
    lengths: list[stats.LengthStats] = field(default_factory=list)
    ranking: stats.Ranking | None = None
    evals: dict[str, Any] | None = None
    trust: list[trust.JudgeTrust] = field(default_factory=list)
    title: str = "Model comparison"
    n_boot: int = 2000
    seed: int = 0

    @property
    def markdown_path(self) -> Path:
        return self.out_dir / "report.md"

    @property
    def html_path(self) -> Path:
        return self.out_dir / "report.html"

    def pair(self, a: str, b: str, unit: str = "dialog") -> stats.PairStats:
        """Statistics of one pair (``a`` against ``b``)."""
        for p in self.pairs:
            if (p.model_a, p.model_b, p.unit) == (a, b, unit):
                return p
        raise KeyError((a, b, unit))

    def verdict_counts(self) -> dict[str, int]:
        """Verdicts over every pair and unit: in all, parsed, unparsed, and ties among the parsed."""
        n, unparsed = sum(p.verdicts for p in self.pairs), sum(p.unparsed for p in self.pairs)
        return {"verdicts": n, "parsed": n - unparsed, "unparsed": unparsed, "ties": sum(p.ties for p in self.pairs)}

    def trust_counts(self) -> dict[str, Any]:
        """The least order-consistent judge's figures (``gates.min_judge_consistency`` checks them)."""
        return trust.gate_counts(self.judges, self.trust)

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "n_boot": self.n_boot,
            "seed": self.seed,
            "models": self.models,
            "pairs": [asdict(p) for p in self.pairs],
            "judges": [asdict(j) for j in self.judges],
            "by_judge": {k: [asdict(p) for p in v] for k, v in self.by_judge.items()},
            "lengths": [asdict(x) for x in self.lengths],
            "ranking": asdict(self.ranking) if self.ranking else None,
            "evals": self.evals,
            "trust": [t.to_dict() for t in self.trust],
        }


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else obj
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


def build_report(out_dir: str | Path, *, models: Sequence[str], verdicts: Sequence[Verdict],
                 dialogs: dict[str, list[Dialog]] | None, n_boot: int = 2000, seed: int = 0,
                 title: str = "Model comparison", lengths: list[stats.LengthStats] | None = None) -> Report:
    """Compute every statistic and write ``summary.json``, ``report.md`` and ``report.html``.

    ``dialogs`` (tags stripped) give the length table; ``lengths`` may be given instead.
    """
    out = Path(out_dir)
    evals_path = out / "eval_results.json"
    rep = Report(
        out_dir=out,
        models=list(models),
        pairs=stats.pair_stats(verdicts, n_boot=n_boot, seed=seed),
        judges=stats.judge_consistency(verdicts, seed=seed),
        by_judge=_by_judge(verdicts, n_boot, seed),
        lengths=lengths if lengths is not None else (stats.length_stats(dialogs) if dialogs else []),
        ranking=stats.bradley_terry(models, verdicts, n_boot=max(100, n_boot // 4), seed=seed)
        if len(models) > 2 else None,
        evals=io.read_json(evals_path) if evals_path.is_file() else None,
        trust=[trust.JudgeTrust.from_dict(d) for d in io.read_json(out / TRUST_FILE).get("judges", [])]
        if (out / TRUST_FILE).is_file() else [],
        title=title,
        n_boot=n_boot,
        seed=seed,
    )
    write_report(rep)
    return rep


def _by_judge(verdicts: Sequence[Verdict], n_boot: int, seed: int) -> dict[str, list[stats.PairStats]]:
    """Each judge's own win rates, when several judges vote (do they agree on the direction?)."""
    names = list(dict.fromkeys(v.judge for v in verdicts))
    if len(names) < 2:
        return {}
    return {j: stats.pair_stats([v for v in verdicts if v.judge == j], n_boot=max(200, n_boot // 4), seed=seed)
            for j in names}


NO_DATA = "no parsed verdicts"


def win_rate_text(p: stats.PairStats) -> tuple[str, str]:
    """The win rate and its interval as shown, or "no parsed verdicts" and "–" when nothing parsed."""
    if p.parsed == 0:
        return NO_DATA, "–"
    return _pct(p.win_rate), f"{_pct(p.ci_low)} – {_pct(p.ci_high)}"


def _judge_rows(rep: Report) -> list[list[Any]]:
    return [[j, f"{p.model_a} vs {p.model_b}", p.unit, p.wins, p.ties, p.losses, p.unparsed, *win_rate_text(p)]
            for j, ps in rep.by_judge.items() for p in ps]


_JUDGE_HEAD = ["judge", "pair", "unit", "win", "tie", "loss", "unparsed", "win rate", "95% CI"]


def write_report(rep: Report) -> None:
    """(Re)write the three report files of ``rep``."""
    title = rep.title
    io.write_json(rep.out_dir / "summary.json", _json_safe(rep.to_dict()))
    with io.atomic_write(rep.markdown_path) as fh:
        fh.write(render_markdown(rep, title))
    with io.atomic_write(rep.html_path) as fh:
        fh.write(render_html(rep, title))


def refresh_report(out_dir: str | Path) -> Report | None:
    """Re-render the report of a comparison folder (after ``sage-dialog eval`` added benchmark results).

    The statistics are recomputed from ``verdicts.jsonl`` with the bootstrap settings recorded in
    ``summary.json`` (so they come out the same); returns None when the folder holds no comparison.
    """
    out = Path(out_dir)
    if not (out / "summary.json").is_file() or not (out / "verdicts.jsonl").is_file():
        return None
    d = io.read_json(out / "summary.json")
    lengths = [stats.LengthStats(model=x["model"], dialogs=x["dialogs"],
                                 **{k: math.nan if x.get(k) is None else float(x[k])
                                    for k in ("mean_words", "median_words", "mean_words_per_turn")})
               for x in d.get("lengths", [])]
    return build_report(out, models=d["models"], verdicts=list(io.read_jsonl(out / "verdicts.jsonl", Verdict)),
                        dialogs=None, lengths=lengths, n_boot=d.get("n_boot", 2000), seed=d.get("seed", 0),
                        title=d.get("title") or "Model comparison")


# ---------------------------------------------------------------------------------------------
# Markdown


def _pct(x: float | None) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def _num(x: float | None, nd: int = 2) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def md_table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    esc = lambda v: str(v).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    return ["| " + " | ".join(esc(h) for h in head) + " |", "|" + "---|" * len(head),
            *("| " + " | ".join(esc(c) for c in r) + " |" for r in rows)]


def render_markdown(rep: Report, title: str) -> str:
    lines = [f"# {title}", "", f"Models: {', '.join(rep.models)}.", ""]
    lines += ["## Win rates", "",
              "Win rate of the first model (ties count half, unparsed verdicts are counted but not scored); "
              "95% interval by bootstrap over seeds. *Consensus* is the original SAGE rule: a seed counts only "
              "where every judge in both orders agrees (M = agreed tie or unreadable).", ""]
    lines += md_table(
        ["pair", "unit", "win", "tie", "loss", "unparsed", "win rate", "95% CI", "consensus A/B/M (of seeds)",
         "length-controlled win rate"],
        [[f"{p.model_a} vs {p.model_b}", p.unit, p.wins, p.ties, p.losses, p.unparsed, *win_rate_text(p),
          f"{p.consensus.A}/{p.consensus.B}/{p.consensus.M} ({p.consensus.labels})",
          (f"{_pct(p.length_controlled.win_rate)} [{_pct(p.length_controlled.ci_low)} – "
           f"{_pct(p.length_controlled.ci_high)}]") if p.length_controlled else "–"]
         for p in rep.pairs])
    lines.append("")
    if rep.ranking:
        lines += ["## Ranking (Bradley-Terry)", "",
                  "Strength on the log-odds scale (mean 0); expected win rate against an average model. Rank "
                  "ranges overlap where the strength intervals overlap.", ""]
        lines += md_table(_RANK_HEAD, _rank_rows(rep.ranking))
        lines.append("")
    elif len(rep.models) > 2:
        lines += ["## Ranking (Bradley-Terry)", "", f"No ranking: {NO_DATA}.", ""]
    ei = ei_rows(rep.evals) if rep.evals else []
    if ei:
        lines += ["## Emotional intelligence (EQ-Bench)", "", EI_NOTE + _ei_limit(rep.evals), ""]
        lines += md_table(EI_HEAD, ei)
        lines.append("")
    lines += ["## Judges", "",
              "Order consistency: with both orders parsed, how often the winner stays the same and how often "
              "swapping the dialogs flips it. First-shown rate: how often a decisive verdict picks the dialog "
              "shown first (0.5 = no position bias).", ""]
    lines += md_table(["judge", "verdicts", "unparsed", "both orders", "consistent", "flipped", "partial",
                        "first-shown rate (95% CI)"],
                       [[j.judge, j.verdicts, j.unparsed, j.both_orders, _pct(j.consistent_rate), _pct(j.flip_rate),
                         j.partial, f"{_pct(j.first_rate)} ({_pct(j.first_rate_ci[0])} – {_pct(j.first_rate_ci[1])})"]
                        for j in rep.judges])
    lines.append("")
    lines += _trust_markdown(rep)
    if rep.by_judge:
        lines += ["Win rates by judge:", "", *md_table(_JUDGE_HEAD, _judge_rows(rep)), ""]
    if rep.lengths:
        lines += ["## Length", "", "Assistant words per dialog, tags stripped.", ""]
        lines += md_table(["model", "dialogs", "mean words", "median words", "words per turn"],
                           [[x.model, x.dialogs, _num(x.mean_words, 1), _num(x.median_words, 1),
                             _num(x.mean_words_per_turn, 1)] for x in rep.lengths])
        lines.append("")
    lc_pairs = [p for p in rep.pairs if p.length_controlled]
    if lc_pairs:
        lines += ["Length-controlled view: logistic regression of the outcome on the word difference "
                  "(win rate at equal length; slope = log-odds per 100 more words), and win rates by which "
                  "dialog is longer.", ""]
        rows = []
        for p in lc_pairs:
            lc = p.length_controlled
            assert lc is not None
            bins = "; ".join(f"{b['bin']}: {_pct(b['win_rate'])} (n={b['n']})" for b in lc.bins)
            rows.append([f"{p.model_a} vs {p.model_b} ({p.unit})", _pct(p.win_rate), _pct(lc.win_rate),
                         _num(lc.slope_per_100_words), bins])
        lines += md_table(["pair", "raw win rate", "at equal length", "slope", "by length"], rows)
        lines.append("")
    if rep.evals:
        lines += ["## General-ability benchmarks (lm-evaluation-harness)", ""]
        lines += md_table(["model", "task", "metric", "value", "stderr"], eval_rows(rep.evals))
        lines.append("")
    return "\n".join(lines)


_RANK_HEAD = ["rank", "model", "strength", "95% CI", "rank range", "expected win rate"]

TRUST_HEAD = ["judge", "consistent (both orders)", "first-shown rate", "canary: picked the injected reply",
              "canary flips (injection changed the verdict)", "clean canaries: better reply picked",
              "asked again: changed"]
TRUST_NOTE = ("How far each judge can be trusted. *Canaries*: fixed pairs of a plainly better and a plainly worse reply, "
              "judged clean and with the worse reply carrying an injection (an instruction to the judge, a fake verdict "
              "line, spoofed delimiters), in both orders; a *flip* is a verdict the injection changed to the injected "
              "reply. *Asked again*: a sample of this comparison's verdicts asked once more (paraphrased prompt, or a "
              "second sample for a sampling judge); the share that changed.")


def _trust_rows(rep: Report) -> list[list[Any]]:
    by = {t.judge: t for t in rep.trust}
    rows = []
    for j in rep.judges:
        t = by.get(j.judge)
        canary = (f"{t.followed} of {t.canaries} ({_pct(t.followed_rate)})" if t and t.canaries else "–")
        flips = (f"{t.flipped} of {t.canaries} ({_pct(t.flip_rate)})" if t and t.canaries else "–")
        clean = f"{t.clean_good} of {t.clean} ({t.clean_ties} ties)" if t and t.clean else "–"
        again = (f"{t.stability_changed} of {t.stability_n} ({_pct(t.changed_rate)}; {t.stability_method})"
                 if t and t.stability_n else "–")
        rows.append([j.judge, f"{j.consistent} of {j.both_orders} ({_pct(j.consistent_rate)})", _pct(j.first_rate),
                     canary, flips, clean, again])
    return rows


def _trust_markdown(rep: Report) -> list[str]:
    if not rep.judges:
        return []
    by = {t.judge: t for t in rep.trust}
    lines = ["### How far the judges can be trusted", "", TRUST_NOTE, ""]
    lines += md_table(TRUST_HEAD, _trust_rows(rep))
    lines.append("")
    for j in rep.judges:
        lines += [trust.trust_sentence(j, by.get(j.judge)), ""]
    return lines


def _rank_rows(r: stats.Ranking) -> list[list[Any]]:
    order = sorted(range(len(r.models)), key=lambda i: (r.rank[i], i))
    rows: list[list[Any]] = []
    for i in order:
        if math.isnan(r.theta[i]):
            rows.append(["–", r.models[i], NO_DATA, "–", f"{r.rank_low[i]}–{r.rank_high[i]}", "–"])
        else:
            rows.append([r.rank[i], r.models[i], _num(r.theta[i]), f"{_num(r.ci_low[i])} – {_num(r.ci_high[i])}",
                         f"{r.rank_low[i]}–{r.rank_high[i]}", _pct(r.expected_win_rate[i])])
    return rows


EI_HEAD = ["model", "EQ-Bench score", "stderr", "parseable"]
EI_NOTE = ("EQ-Bench v2 (171 questions shipped with sage-dialog) through lm-evaluation-harness's own eq_bench task "
           "and scorer: 0-100, where random answers score 0 and an unparseable answer counts 0; *parseable* is "
           "the share of answers that rated the four emotions asked.")


def ei_rows(evals: dict[str, Any] | None) -> list[list[Any]]:
    """One row per model that has EQ-Bench results: score, its standard error, parseable share."""
    rows = []
    for model, res in (evals or {}).get("models", {}).items():
        m = res.get("eq_bench")
        if not isinstance(m, dict) or not isinstance(m.get("eqbench"), int | float):
            continue
        err, parse = m.get("eqbench_stderr"), m.get("percent_parseable")
        rows.append([model, _num(float(m["eqbench"]), 2), _num(float(err), 2) if isinstance(err, int | float) else "–",
                     f"{float(parse):.1f}%" if isinstance(parse, int | float) else "–"])
    return rows


def _ei_limit(evals: dict[str, Any] | None) -> str:
    limits = {r.get("limit") for r in (evals or {}).get("runs", []) if "eq_bench" in r.get("tasks", [])}
    if len(limits) == 1 and (n := limits.pop()) is not None:
        return f" Measured on the first {n} questions (limit)."
    return ""


def eval_rows(evals: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for model, res in evals.get("models", {}).items():
        for task, metrics in sorted(res.items()):
            for metric, val in sorted(metrics.items()):
                if metric.endswith("_stderr") or not isinstance(val, int | float):
                    continue
                err = metrics.get(f"{metric}_stderr")
                rows.append([model, task, metric, _num(float(val), 4),
                             _num(float(err), 4) if isinstance(err, int | float) else "–"])
    return rows


# ---------------------------------------------------------------------------------------------
# SVG plots


def _e(s: Any) -> str:
    return html.escape(str(s), quote=True)


@dataclass(frozen=True)
class _Layout:
    """Plot geometry. Wide: labels left of the bars (740 px). Narrow (phones): each label on its own
    line above its bar, 340 px, so a 390 px screen shows the plot at full size with readable text."""

    narrow: bool
    w: int
    x0: int  # where the plot area starts
    plot_w: int
    row_h: int
    top: int = 34

    def label(self, y_row: float, text: str) -> str:
        if self.narrow:
            return f'<text x="4" y="{y_row + 14:.1f}" class="lbl">{_e(text)}</text>'
        return (f'<text x="{self.x0 - 8}" y="{y_row + self.row_h / 2 + 4:.1f}" text-anchor="end" '
                f'class="lbl">{_e(text)}</text>')

    def center(self, y_row: float) -> float:
        """Vertical centre of a row's bar or whisker."""
        return y_row + (32 if self.narrow else self.row_h / 2)

    def open(self, h: int, title: str) -> list[str]:
        kind = "narrow" if self.narrow else "wide"
        return [f'<svg class="plot {kind}" role="img" xmlns="http://www.w3.org/2000/svg" width="{self.w}" '
                f'height="{h}" viewBox="0 0 {self.w} {h}"><title>{_e(title)}</title>',
                f'<text x="4" y="18" class="ptitle">{_e(title)}</text>']


_WIDE = _Layout(narrow=False, w=740, x0=230, plot_w=420, row_h=30)
_NARROW = _Layout(narrow=True, w=340, x0=6, plot_w=262, row_h=50)


def _both(draw: Any) -> str:
    """The wide and the narrow drawing of one plot; CSS shows the one that fits the screen."""
    return str(draw(_WIDE)) + str(draw(_NARROW))


def forest_svg(rows: Sequence[tuple[str, float, float, float]], *, lo: float, hi: float, ref: float | None,
               title: str, fmt: str = "pct", color: str = BLUE) -> str:
    """Point estimates with interval whiskers on a shared axis, one row per label."""
    return _both(lambda lay: _forest(lay, rows, lo=lo, hi=hi, ref=ref, title=title, fmt=fmt, color=color))


def _forest(lay: _Layout, rows: Sequence[tuple[str, float, float, float]], *, lo: float, hi: float,
            ref: float | None, title: str, fmt: str, color: str) -> str:
    top, row_h = lay.top, lay.row_h
    h = top + row_h * len(rows) + 30
    x = lambda v: lay.x0 + (min(max(v, lo), hi) - lo) / (hi - lo) * lay.plot_w  # noqa: E731
    show = (lambda v: _pct(v)) if fmt == "pct" else (lambda v: _num(v))
    parts = lay.open(h, title)
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        anchor = "start" if lay.narrow and k == 0 else "middle"  # keep the first tick inside a narrow plot
        parts.append(f'<line x1="{x(v):.1f}" y1="{top - 6}" x2="{x(v):.1f}" y2="{h - 24}" stroke="#eee"/>'
                     f'<text x="{x(v):.1f}" y="{h - 8}" text-anchor="{anchor}" class="tick">{_e(show(v))}</text>')
    if ref is not None:
        parts.append(f'<line x1="{x(ref):.1f}" y1="{top - 8}" x2="{x(ref):.1f}" y2="{h - 24}" stroke="#555" '
                     f'stroke-dasharray="4 3"/>')
    for i, (label, est, a, b) in enumerate(rows):
        y_row = top + row_h * i
        y = lay.center(y_row)
        parts.append(lay.label(y_row, label))
        if not math.isnan(a) and not math.isnan(b):
            parts.append(f'<line class="ci" x1="{x(a):.1f}" y1="{y:.1f}" x2="{x(b):.1f}" y2="{y:.1f}" '
                         f'stroke="{color}" stroke-width="3"/>')
            for v in (a, b):
                parts.append(f'<line x1="{x(v):.1f}" y1="{y - 6:.1f}" x2="{x(v):.1f}" y2="{y + 6:.1f}" '
                             f'stroke="{color}" stroke-width="2"/>')
        if not math.isnan(est):
            parts.append(f'<circle class="est" cx="{x(est):.1f}" cy="{y:.1f}" r="6" fill="{color}">'
                         f'<title>{_e(label)}: {_e(show(est))} [{_e(show(a))} – {_e(show(b))}]</title></circle>'
                         f'<text x="{lay.x0 + lay.plot_w + 8}" y="{y + 4:.1f}" class="val">{_e(show(est))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def stacked_svg(rows: Sequence[tuple[str, Sequence[tuple[float, str, str]]]], *, title: str) -> str:
    """100%-stacked horizontal bars: each row is ``(label, [(count, color, name), ...])``."""
    return _both(lambda lay: _stacked(lay, rows, title=title))


def _stacked(lay: _Layout, rows: Sequence[tuple[str, Sequence[tuple[float, str, str]]]], *, title: str) -> str:
    top, row_h, plot_w = lay.top, lay.row_h, lay.plot_w
    names: dict[str, str] = {}
    for _, segs in rows:
        for _, color, name in segs:
            names.setdefault(name, color)
    # the legend wraps onto more lines where the plot is narrow
    legend: list[tuple[float, int, str, str]] = []
    lx, line = float(lay.x0), 0
    for name, color in names.items():
        width = 24 + 7 * len(name)
        if lx + width > lay.w and lx > lay.x0:
            lx, line = float(lay.x0), line + 1
        legend.append((lx, line, name, color))
        lx += width
    h = top + row_h * len(rows) + 34 + 18 * line
    parts = lay.open(h, title)
    for i, (label, segs) in enumerate(rows):
        y_row = top + row_h * i
        y = lay.center(y_row)
        total = sum(c for c, _, _ in segs) or 1
        parts.append(lay.label(y_row, label))
        x0 = float(lay.x0)
        for count, color, name in segs:
            wd = count / total * plot_w
            if wd <= 0:
                continue
            parts.append(f'<rect class="bar" x="{x0:.1f}" y="{y - 11:.1f}" width="{wd:.1f}" height="22" '
                         f'fill="{color}"><title>{_e(label)} – {_e(name)}: {count:g} ({100 * count / total:.1f}%)</title></rect>')
            if wd > 26:
                parts.append(f'<text x="{x0 + wd / 2:.1f}" y="{y + 4:.1f}" text-anchor="middle" '
                             f'class="inbar">{count:g}</text>')
            x0 += wd
    legend_y = top + row_h * len(rows) + 16
    for lx, line, name, color in legend:
        ly = legend_y + 18 * line
        parts.append(f'<rect x="{lx:.1f}" y="{ly - 10}" width="12" height="12" fill="{color}"/>'
                     f'<text x="{lx + 16:.1f}" y="{ly}" class="tick">{_e(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def bars_svg(rows: Sequence[tuple[str, float]], *, title: str, unit: str = "") -> str:
    """Plain horizontal bars (e.g. mean words per model)."""
    return _both(lambda lay: _bars(lay, rows, title=title, unit=unit))


def _bars(lay: _Layout, rows: Sequence[tuple[str, float]], *, title: str, unit: str) -> str:
    top, row_h = lay.top, lay.row_h
    vmax = max([v for _, v in rows if not math.isnan(v)] + [1e-9])
    h = top + row_h * len(rows) + 10
    parts = lay.open(h, title)
    for i, (label, v) in enumerate(rows):
        y_row = top + row_h * i
        y = lay.center(y_row)
        wd = 0.0 if math.isnan(v) else max(v, 0.0) / vmax * (lay.plot_w - 40)  # room for the value after the bar
        parts.append(lay.label(y_row, label)
                     + f'<rect class="bar" x="{lay.x0}" y="{y - 11:.1f}" width="{wd:.1f}" height="22" fill="{BLUE}">'
                     f'<title>{_e(label)}: {_num(v, 1)} {_e(unit)}</title></rect>'
                     f'<text x="{lay.x0 + wd + 6:.1f}" y="{y + 4:.1f}" class="val">{_num(v, 1)}</text>')
    parts.append("</svg>")
    return "".join(parts)


# ---------------------------------------------------------------------------------------------
# HTML

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:980px;color:#222;
padding:0 1rem}h1{margin-bottom:.2rem}h2{margin-top:2.2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
.sub{color:#666}.note{color:#555;font-size:.92rem;max-width:760px}table{border-collapse:collapse;margin:.8rem 0;
font-size:.9rem}th,td{border:1px solid #ddd;padding:.3rem .55rem;text-align:right}th:first-child,td:first-child
{text-align:left}th{background:#f5f5f5}svg.plot{display:block;margin:1rem 0;max-width:100%;height:auto}
.ptitle{font-weight:600;font-size:14px}.lbl{font-size:12px}.tick{font-size:11px;fill:#666}.val{font-size:12px}
.inbar{font-size:11px;fill:#fff}.cards{display:flex;gap:1rem;flex-wrap:wrap}.card{border:1px solid #ddd;
border-radius:8px;padding:.6rem 1rem;min-width:200px}.big{font-size:1.6rem;font-weight:600}
body{overflow-wrap:anywhere}.tablewrap{overflow-x:auto;max-width:100%}svg.narrow{display:none}
@media (max-width:700px){body{margin:1rem auto}svg.wide{display:none}svg.narrow{display:block}.card{min-width:0;
flex:1 1 100%}}
"""


def _html_table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    # a wide table scrolls inside its own box on a phone; the page itself never scrolls sideways
    return ('<div class="tablewrap"><table><thead><tr>' + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr></thead><tbody>"
            + "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
            + "</tbody></table></div>")


def render_html(rep: Report, title: str) -> str:
    body: list[str] = [f"<h1>{_e(title)}</h1>", f'<p class="sub">Models: {_e(", ".join(rep.models))}</p>']
    dialog_pairs = [p for p in rep.pairs if p.unit == "dialog"] or rep.pairs
    cards = []
    for p in dialog_pairs[:6]:
        rate, ci = win_rate_text(p)
        cards.append(f'<div class="card"><div>{_e(p.model_a)} vs {_e(p.model_b)}</div>'
                     f'<div class="big">{_e(rate)}</div>'
                     f'<div class="sub">95% CI {_e(ci)}; '
                     f'{p.seeds} seeds, {p.verdicts} verdicts ({p.unparsed} unparsed)</div></div>')
    body.append(f'<div class="cards">{"".join(cards)}</div>')

    body.append('<h2 id="win-rates">Win rates</h2>')
    body.append('<p class="note">Win rate of the first model of each pair: ties count half, unparsed verdicts are '
                'counted but not scored. Whiskers are 95% bootstrap intervals over seeds; the dashed line is 50%.</p>')
    body.append(forest_svg([(f"{p.model_a} vs {p.model_b}" + (" (per turn)" if p.unit == "turn" else ""),
                             p.win_rate, p.ci_low, p.ci_high) for p in rep.pairs],
                           lo=0.0, hi=1.0, ref=0.5, title="Win rate of the first model, 95% CI"))
    body.append(stacked_svg([(f"{p.model_a} vs {p.model_b}" + (" (per turn)" if p.unit == "turn" else ""),
                              [(p.wins, GREEN, "win"), (p.ties, GREY, "tie"), (p.losses, RED, "loss"),
                               (p.unparsed, PALE, "unparsed")]) for p in rep.pairs],
                            title="Verdicts: win / tie / loss / unparsed"))
    body.append('<p class="note">Consensus (the original SAGE rule): a seed counts only where every judge in both '
                'orders gives the same answer; seeds with disagreement are left out.</p>')
    body.append(stacked_svg([(f"{p.model_a} vs {p.model_b}" + (" (per turn)" if p.unit == "turn" else ""),
                              [(p.consensus.A, GREEN, "A wins"), (p.consensus.B, RED, "B wins"),
                               (p.consensus.M, GREY, "M (tie/unreadable)"),
                               (p.consensus.disagreed, PALE, "no consensus")]) for p in rep.pairs],
                            title="Consensus over judges and orders"))
    body.append(_html_table(
        ["pair", "unit", "win", "tie", "loss", "unparsed", "win rate", "95% CI", "consensus A/B/M", "no consensus"],
        [[f"{p.model_a} vs {p.model_b}", p.unit, p.wins, p.ties, p.losses, p.unparsed, *win_rate_text(p),
          f"{p.consensus.A}/{p.consensus.B}/{p.consensus.M}",
          p.consensus.disagreed] for p in rep.pairs]))

    if rep.ranking:
        r = rep.ranking
        order = sorted(range(len(r.models)), key=lambda i: (r.rank[i], i))
        span = max([abs(v) for v in r.ci_low + r.ci_high if not math.isnan(v)] + [1.0])
        body.append('<h2 id="ranking">Ranking</h2>')
        body.append('<p class="note">Bradley-Terry strengths (log-odds, mean 0) with 95% bootstrap intervals over '
                    'seeds; a model one unit stronger wins about 73% against the other. Rank ranges overlap where '
                    'the intervals overlap.</p>')
        body.append(forest_svg([(f"#{r.rank[i]} {r.models[i]}", r.theta[i], r.ci_low[i], r.ci_high[i]) for i in order],
                               lo=-span * 1.1, hi=span * 1.1, ref=0.0, fmt="num",
                               title="Bradley-Terry strength, 95% CI"))
        body.append(_html_table(_RANK_HEAD, _rank_rows(r)))
    elif len(rep.models) > 2:
        body.append('<h2 id="ranking">Ranking</h2>')
        body.append(f'<p class="note">No ranking: {NO_DATA}.</p>')

    ei = ei_rows(rep.evals) if rep.evals else []
    if ei:
        body.append('<h2 id="emotional-intelligence">Emotional intelligence (EQ-Bench)</h2>')
        body.append(f'<p class="note">{_e(EI_NOTE + _ei_limit(rep.evals))}</p>')
        scores = [(model, float(res["eq_bench"]["eqbench"])) for model, res in rep.evals["models"].items()  # type: ignore[index]
                  if isinstance(res.get("eq_bench", {}).get("eqbench"), int | float)]
        body.append(bars_svg(scores, title="EQ-Bench score (0-100; below 0 drawn as 0)"))
        body.append(_html_table(EI_HEAD, ei))

    body.append('<h2 id="judges">Judges</h2>')
    body.append('<p class="note">Order consistency: the same pair judged in both orders. A consistent judge names the '
                'same winner; a flip means swapping the dialogs reversed the verdict (position bias). Below, how often '
                'each judge picks the dialog shown first (50% = unbiased).</p>')
    body.append(stacked_svg([(j.judge, [(j.consistent, GREEN, "consistent"), (j.partial, GREY, "partial (one tie)"),
                                        (j.flipped, RED, "flipped")]) for j in rep.judges],
                            title="Order consistency per judge"))
    body.append(forest_svg([(j.judge, j.first_rate, j.first_rate_ci[0], j.first_rate_ci[1]) for j in rep.judges],
                           lo=0.0, hi=1.0, ref=0.5, title="Picks the dialog shown first, 95% CI", color="#6a1b9a"))
    body.append(_html_table(["judge", "verdicts", "unparsed", "both orders", "consistent", "flipped", "partial"],
                            [[j.judge, j.verdicts, j.unparsed, j.both_orders, _pct(j.consistent_rate),
                              _pct(j.flip_rate), j.partial] for j in rep.judges]))
    if rep.judges:
        by = {t.judge: t for t in rep.trust}
        body.append('<h3 id="judge-trust">How far the judges can be trusted</h3>')
        body.append(f'<p class="note">{_e(TRUST_NOTE)}</p>')
        body.append(_html_table(TRUST_HEAD, _trust_rows(rep)))
        for j in rep.judges:  # the sentence's **bold** becomes <strong>
            text = _e(trust.trust_sentence(j, by.get(j.judge)))
            body.append("<p>" + re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text) + "</p>")
    if rep.by_judge:
        body.append('<p class="note">Win rates by judge (several judges vote; do they agree?):</p>')
        body.append(_html_table(_JUDGE_HEAD, _judge_rows(rep)))

    lc_pairs = [p for p in rep.pairs if p.length_controlled]
    if rep.lengths or lc_pairs:
        body.append('<h2 id="length">Length</h2>')
        body.append('<p class="note">LLM judges tend to prefer longer answers. The length-controlled win rate is the '
                    'win rate at equal length from a logistic regression of the outcome on the word difference.</p>')
    if rep.lengths:
        body.append(bars_svg([(x.model, x.mean_words) for x in rep.lengths], title="Assistant words per dialog (mean)",
                             unit="words"))
    if lc_pairs:
        rows: list[tuple[str, float, float, float]] = []
        for p in lc_pairs:
            lc = p.length_controlled
            assert lc is not None
            name = f"{p.model_a} vs {p.model_b}" + (" (per turn)" if p.unit == "turn" else "")
            rows += [(f"{name}: raw", p.win_rate, p.ci_low, p.ci_high),
                     (f"{name}: equal length", lc.win_rate, lc.ci_low, lc.ci_high)]
        body.append(forest_svg(rows, lo=0.0, hi=1.0, ref=0.5, title="Raw vs length-controlled win rate, 95% CI"))
        body.append(_html_table(["pair", "slope (log-odds / 100 words)", *[b["bin"] for b in _BIN_NAMES]],
                                [[f"{p.model_a} vs {p.model_b} ({p.unit})",
                                  _num(p.length_controlled.slope_per_100_words),  # type: ignore[union-attr]
                                  *[f"{_pct(b['win_rate'])} (n={b['n']})" for b in p.length_controlled.bins]]  # type: ignore[union-attr]
                                 for p in lc_pairs]))
    if rep.evals:
        body.append('<h2 id="benchmarks">General-ability benchmarks</h2>')
        body.append(_html_table(["model", "task", "metric", "value", "stderr"], eval_rows(rep.evals)))
    summary_json = json.dumps(_json_safe(rep.to_dict())).replace("</", "<\\/")  # safe inside <script>
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{_e(title)}</title>"
            f"<style>{_CSS}</style></head><body>{''.join(body)}"
            f"<script type=\"application/json\" id=\"summary\">{summary_json}</script>"
            "</body></html>\n")


_BIN_NAMES = [{"bin": name} for name, _, _ in stats._BINS]

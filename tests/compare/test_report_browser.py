"""The HTML report opens in a real headless Chromium and shows its plots, with no network access."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from sage_dialog.core import io
from sage_dialog.core.schema import Dialog, Turn, Verdict
from sage_dialog.stages.compare.report import build_report, refresh_report

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _three_model_run(out: Path) -> None:
    rng = random.Random(0)
    strength = {"base": 0.0, "sft": 0.6, "sage <dpo>": 1.2}  # a name that must be escaped in HTML
    models = list(strength)
    dialogs = {m: [Dialog(id=f"{m}{i}", turns=[Turn(role="user", text=f"seed {i}"),
                                              Turn(role="assistant", text="word " * rng.randint(5, 40 + 20 * k))],
                          meta={"seed": f"seed {i}"}) for i in range(30)] for k, m in enumerate(models)}
    verdicts = []
    for i in range(30):
        for x in range(3):
            for y in range(x + 1, 3):
                a, b = models[x], models[y]
                p = 1 / (1 + math.exp(-(strength[a] - strength[b])))
                for judge in ("judge-1", "judge-2"):
                    for first in ("a", "b"):
                        r = rng.random()
                        winner = None if r < 0.03 else "tie" if r < 0.1 else ("a" if rng.random() < p else "b")
                        verdicts.append(Verdict(seed=f"seed {i}", model_a=a, model_b=b, judge=judge,
                                                shown_first=first, winner=winner, parsed=winner is not None,  # type: ignore[arg-type]
                                                length_a=len(dialogs[a][i].turns[1].text.split()),
                                                length_b=len(dialogs[b][i].turns[1].text.split())))
    io.write_jsonl(out / "verdicts.jsonl", verdicts)
    build_report(out, models=models, verdicts=verdicts, dialogs=dialogs, n_boot=300, title="Three models")


def test_report_is_self_contained_and_complete(tmp_path: Path) -> None:
    _three_model_run(tmp_path)
    page = (tmp_path / "report.html").read_text()
    for banned in ("http://", "https://", "<link", "src=", "@import", "url("):
        if banned == "http://":
            page_wo_ns = page.replace('xmlns="http://www.w3.org/2000/svg"', "")
            assert banned not in page_wo_ns
        else:
            assert banned not in page, banned
    assert "sage &lt;dpo&gt;" in page and "sage <dpo>" not in page.split("<script")[0]
    md = (tmp_path / "report.md").read_text()
    assert "## Ranking (Bradley-Terry)" in md and "| 1 | sage <dpo> |" in md
    assert "| judge-2 | base vs sft | dialog |" in md  # each judge's own win rates
    # benchmark results added later show up when the report is refreshed
    (tmp_path / "eval_results.json").write_text(
        '{"models": {"sft": {"tiny_qa": {"acc": 0.75, "acc_stderr": 0.1}}}}')
    before = (tmp_path / "summary.json").read_text()
    rep = refresh_report(tmp_path)
    assert rep is not None and rep.ranking is not None and rep.title == "Three models"
    assert md.split("## Length")[0] == (tmp_path / "report.md").read_text().split("## Length")[0]  # same numbers
    assert '"evals": null' not in (tmp_path / "summary.json").read_text() and '"evals": null' in before
    assert "| sft | tiny_qa | acc | 0.7500 | 0.1000 |" in (tmp_path / "report.md").read_text()


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium at /usr/bin/chromium")
def test_report_opens_in_headless_chromium_and_shows_its_plots(tmp_path: Path) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    _three_model_run(tmp_path)
    url = (tmp_path / "report.html").as_uri()
    with playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            requests: list[str] = []
            errors: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(url, wait_until="load")
            assert page.title() == "Three models"
            assert requests == [url]  # nothing else fetched: no CDN, fonts or images
            assert errors == []
            svgs = page.locator("svg.plot.wide")
            assert svgs.count() == 8  # win rates, verdict split, consensus, ranking, judges x2, length x2
            for i in range(svgs.count()):
                box = svgs.nth(i).bounding_box()
                assert box is not None and box["width"] > 300 and box["height"] > 60
            # three pairs -> three win-rate points, drawn inside the plot area
            first = svgs.nth(0)
            assert first.locator("circle.est").count() == 3
            for i in range(3):
                b = first.locator("circle.est").nth(i).bounding_box()
                assert b is not None and b["width"] > 5
            assert first.locator("line.ci").count() == 3
            ranking = page.locator("#ranking + p + svg.plot.wide")
            assert ranking.locator("circle.est").count() == 3
            assert "#1 sage <dpo>" in (ranking.text_content() or "")
            assert page.locator("svg.plot rect.bar").count() > 10
            png = page.screenshot(full_page=True)
            assert len(png) > 20_000  # a rendered page with plots, not a blank one
        finally:
            browser.close()


# the smallest rendered size (px) of any plot text, counting the SVG's scaling to the screen
_MIN_TEXT_PX = """() => {
  const sizes = [];
  for (const svg of document.querySelectorAll('svg.plot')) {
    const box = svg.getBoundingClientRect();
    if (box.width === 0) continue;  // the drawing for the other screen size
    const scale = box.width / svg.viewBox.baseVal.width;
    for (const t of svg.querySelectorAll('text')) sizes.push(parseFloat(getComputedStyle(t).fontSize) * scale);
  }
  return [Math.min(...sizes), sizes.length];
}"""


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium at /usr/bin/chromium")
def test_report_fits_a_phone_screen(tmp_path: Path) -> None:
    """At 390 px (a phone) the page never scrolls sideways and plot text stays readable (>= 10 px)."""
    playwright = pytest.importorskip("playwright.sync_api")
    _three_model_run(tmp_path)
    with playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=1)
            page.goto((tmp_path / "report.html").as_uri(), wait_until="load")
            scroll_w, view_w = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
            assert scroll_w <= view_w == 390
            smallest, n_texts = page.evaluate(_MIN_TEXT_PX)
            assert n_texts > 30 and smallest >= 10, smallest
            shown = page.locator("svg.plot.narrow")
            assert shown.count() == 8
            for i in range(8):
                box = shown.nth(i).bounding_box()
                assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
            # every plot label lies inside the screen
            right = page.evaluate("() => Math.max(...[...document.querySelectorAll('svg.narrow text.lbl')]"
                                  ".map(t => t.getBoundingClientRect().right))")
            assert right <= 390
        finally:
            browser.close()

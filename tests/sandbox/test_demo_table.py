"""The README's demo table, checked against a real run of the full demo within the tolerance the
README states.

On one machine the demo repeats its table to the last digit (one torch thread). Across x86 CPUs it
does not: float32 matmuls and reductions run different kernels (AVX2 vs AVX-512, MKL's Intel and AMD
code paths) whose rounding differs, and training amplifies the last bits into the third decimal
(an AMD EPYC gave M2 +1.695 and DPO +1.871 against the table's +1.691 and +1.887). So the README says
how far the numbers may move, and this test holds the table to it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sage_dialog.cli import main

REPO = Path(__file__).resolve().parents[2]
NUM = r"([+-]?\d+\.\d+)"


def readme_tolerance() -> float:
    m = re.search(r"within ±(\d+\.\d+)", (REPO / "README.md").read_text())
    assert m, "README.md states the demo table's tolerance as 'within ±X'"
    return float(m.group(1))


def readme_table() -> dict[str, list[float]]:
    """model -> every number of its README row (reward, its CI, then difference, CI, win rate, CI)."""
    text = (REPO / "README.md").read_text()
    section = text.split("## What the demo shows", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        m = re.match(r"\| (M1|M2|DPO) \|(.*)\|$", line)
        if m:
            rows[m.group(1)] = [float(x) for x in re.findall(NUM, m.group(2))]
    assert set(rows) == {"M1", "M2", "DPO"}, rows
    return rows


def result_numbers(m: dict[str, object]) -> list[float]:
    out = [m["reward"], *m["reward_ci"]]  # type: ignore[list-item]
    if "diff_vs_m1" in m:
        w = m["win_vs_m1"]
        out += [m["diff_vs_m1"], *m["diff_ci"], w["win_rate"], *w["ci"]]  # type: ignore[index, list-item]
    return [float(x) for x in out]  # type: ignore[arg-type]


def test_the_readme_table_is_parsed() -> None:
    rows = readme_table()
    assert len(rows["M1"]) == 3 and len(rows["M2"]) == len(rows["DPO"]) == 9
    assert 0 < readme_tolerance() <= 0.1


@pytest.mark.slow
@pytest.mark.timeout(2400)  # ~2-3.5 min on 2 idle cores; 15+ min on a shared, busy one
def test_full_demo_gives_the_readme_table_within_its_tolerance(tmp_path: Path) -> None:
    assert main(["demo", "-o", str(tmp_path / "demo"), "--no-progress"]) == 0
    res = json.loads((tmp_path / "demo" / "evaluate" / "results.json").read_text())
    tol = readme_tolerance()
    for name, want in readme_table().items():
        got = result_numbers(res["models"][name])
        assert len(got) == len(want), name
        far = [(round(g, 3), w) for g, w in zip(got, want, strict=True) if abs(g - w) > tol + 1e-9]
        assert not far, f"{name}: {far} (got {[round(g, 3) for g in got]})"

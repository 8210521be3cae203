"""Peak RSS per stage: each stage's own peak (not the process lifetime's), children included, in the
manifest's summary and the stage table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from sage_dialog.core.rss import PeakRSS
from sage_dialog.pipeline.runner import Stage, StageContext, run_stages, summary_table

MB = 1024 * 1024


def _hold(mb: int) -> None:
    block = bytearray(mb * MB)  # zero-filled: every page is touched, so it is resident
    block[:: 4096] = b"\x01" * len(block[:: 4096])
    del block


def test_a_stage_after_a_big_one_reports_its_own_peak(tmp_path: Path) -> None:
    def big(ctx: StageContext) -> dict[str, int]:
        _hold(300)
        return {}

    def small(ctx: StageContext) -> dict[str, int]:
        return {}

    out = run_stages([Stage("big", big), Stage("small", small)], tmp_path, log=lambda _m: None)
    peaks = {s: json.loads((tmp_path / s / "manifest.json").read_text())["summary"]["peak_rss_mb"]
             for s in ("big", "small")}
    assert peaks["big"] >= 300
    assert peaks["small"] < peaks["big"] - 200  # ru_maxrss would say the big stage's peak here
    assert "peak MB" in summary_table(out).splitlines()[0]


def test_children_count_while_they_run(tmp_path: Path) -> None:
    code = "b = bytearray(200 * 1024 * 1024); b[::4096] = b'\\x01' * len(b[::4096]); import time; time.sleep(1.0)"
    with PeakRSS(interval_s=0.05) as peak:
        subprocess.run([sys.executable, "-c", code], check=True)
    r = peak.result()
    assert r["peak_rss_children_mb"] >= 200
    assert r["peak_rss_mb"] >= r["peak_rss_self_mb"] + 150

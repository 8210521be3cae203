"""Progress output that reads well when not on a terminal: piped or redirected, a progress bar is a
plain line every few seconds (one whole line a frame, no carriage-return redraws); on a terminal it
stays a bar. Checked in-process and through a real pipe."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from sage_dialog.core import console


def test_bar_frames_become_plain_lines() -> None:
    out = io.StringIO()
    plain = console._PlainProgress(out, every_s=0.0)  # type: ignore[arg-type]
    plain.write("\rdemo:  10%|#         | 1/10 [00:01<00:09]   ")
    plain.write("\rdemo:  10%|#         | 1/10 [00:01<00:09]   ")  # the same frame again: once
    plain.write("\rdemo: 100%|##########| 10/10 [00:02<00:00]\x1b[A")
    plain.write("\n")  # tqdm's closing newline: the frame already ended its line
    plain.write("done\n")
    assert out.getvalue() == ("demo:  10%|#         | 1/10 [00:01<00:09]\n"
                              "demo: 100%|##########| 10/10 [00:02<00:00]\n"
                              "done\n")


def test_frames_in_between_wait_for_the_interval_and_the_last_one_is_kept() -> None:
    out = io.StringIO()
    plain = console._PlainProgress(out, every_s=3600)  # type: ignore[arg-type]
    for i in range(1, 101):
        plain.write(f"\rbar: {i}/100")
    plain.write("\n")
    plain.write("\rnext: 1/5")
    assert out.getvalue() == "bar: 1/100\nbar: 100/100\nnext: 1/5\n"


SCRIPT = textwrap.dedent("""
    import sys, time
    from tqdm import tqdm
    from sage_dialog.core import console
    from sage_dialog.backends import progress
    with console.session(console.NORMAL):
        bar = tqdm(total=2000, desc="work", unit="item", file=sys.stderr, dynamic_ncols=True)
        meter = progress.Meter(bar)
        for i in range(2000):
            bar.update(1)
            meter(1, 5)              # the backends' ticks: a postfix refresh each time they may
            if i % 500 == 0:
                time.sleep(0.3)
        bar.close()
    print("finished")
""")


def test_a_piped_command_writes_few_plain_lines(tmp_path: Path) -> None:
    script = tmp_path / "s.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "SAGE_DIALOG_PROGRESS_EVERY": "60"}
    env.pop("TQDM_MININTERVAL", None)
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "\r" not in r.stderr and "\x1b[" not in r.stderr
    lines = [x for x in r.stderr.splitlines() if x.startswith("work")]
    # the first frame and the final one (a frame every 60 s at most), not one per update
    assert 1 <= len(lines) <= 3, r.stderr
    assert "2000/2000" in lines[-1] and r.stdout.strip() == "finished"

"""A signal ends the process however busy it is (issue 28): the watchdog of core.interrupt.

Python runs a signal handler only between bytecodes; a process busy in C (here ``sum`` over a huge
``range``, which never checks for signals; in the issue, pydantic-core deadlocked in Rust after an
allocation failed) outlives SIGTERM. The watchdog, a forked helper reading the interpreter's
signal wakeup fd, kills it once the grace time has passed. A process that ends in time is left
alone, and the watchdog ends with it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[2] / "src")

BUSY = """
import sys
from sage_dialog.core import interrupt
interrupt.GRACE_S = 1.0
with interrupt.signals_interrupt():
    print("busy", flush=True)
    {work}
print("done", flush=True)
"""


def _start(work: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", BUSY.format(work=work)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "busy"
    return proc


def test_a_process_busy_in_c_is_killed_after_the_grace_time() -> None:
    proc = _start("sum(range(10**13))  # hours of C that never checks for signals")
    time.sleep(0.3)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("still alive 20 s after SIGTERM") from None
    assert proc.returncode == -signal.SIGKILL
    assert time.monotonic() - t0 < 15  # 1 s of grace; slack for a loaded machine (it ran for hours before)
    assert "still busy 1 s after the signal; killing it now" in err


def test_a_process_that_stops_in_time_is_not_killed() -> None:
    proc = _start("import time; time.sleep(30)  # interruptible: the handler runs")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == -signal.SIGINT  # KeyboardInterrupt, uncaught: Python ends itself by SIGINT
    assert "KeyboardInterrupt" in err and "killing it" not in err


def test_the_watchdog_ends_with_the_block() -> None:
    proc = _start("pass")
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0 and "done" in out, err

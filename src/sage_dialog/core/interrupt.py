"""Clean interruption: Ctrl-C and SIGTERM end a command the same way, with nothing half-written left.

:func:`signals_interrupt` makes SIGTERM (whose default kills the process without running any
``finally``) and SIGINT raise :class:`KeyboardInterrupt` in the main thread, so atomic writers remove
their temporary files and stages remove their partial folders; it also sets :data:`stop_requested`,
which in-process generation checks at every decoding step, so a batch that would take minutes ends
now. :func:`report_interrupted` then says what was kept for resuming (:func:`io.kept_for_resume`).
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator

stop_requested = threading.Event()


@contextlib.contextmanager
def signals_interrupt(*, enabled: bool = True) -> Iterator[list[str]]:
    """While the block runs, SIGTERM / SIGINT raise KeyboardInterrupt; yields the list of signal names
    received (empty when the interrupt came another way). Off the main thread, or not ``enabled``,
    it changes nothing."""
    received: list[str] = []
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum: int, _frame: object) -> None:
        received.append(signal.Signals(signum).name)
        stop_requested.set()
        raise KeyboardInterrupt

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield received
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        stop_requested.clear()


def report_interrupted(received: list[str]) -> int:
    """Print what an interrupted command kept for resuming; return the exit code (130 SIGINT, 143 SIGTERM)."""
    from sage_dialog.core.io import kept_for_resume

    name = received[0] if received else "SIGINT"
    kept = kept_for_resume()
    print(f"interrupted ({name}); no half-written file was left behind; "
          + ("kept for resuming:" if kept else "nothing had finished yet"), file=sys.stderr)
    for line in kept:
        print(f"  {line}", file=sys.stderr)
    print("run the same command again to go on", file=sys.stderr)
    return 143 if name == "SIGTERM" else 130

"""Clean interruption: Ctrl-C and SIGTERM end a command the same way, with nothing half-written left.

:func:`signals_interrupt` makes SIGTERM (whose default kills the process without running any
``finally``) and SIGINT raise :class:`KeyboardInterrupt` in the main thread, so atomic writers remove
their temporary files and stages remove their partial folders; it also sets :data:`stop_requested`,
which in-process generation checks at every decoding step, so a batch that would take minutes ends
now. :func:`report_interrupted` then says what was kept for resuming (:func:`io.kept_for_resume`).

A Python signal handler only runs between bytecodes: code busy in C (a regex backtracking, a
validator in Rust, a Rust allocator that failed and deadlocked while printing its backtrace, as a
3 GB address-space limit once made pydantic do) never sees it, and the process outlives SIGTERM.
So the block also starts a *watchdog*: a forked helper that does nothing but read the interpreter's
signal wakeup fd (which the C-level handler writes to at once, whatever the main thread is doing).
When SIGTERM or SIGINT arrives and the process has not ended :data:`GRACE_S` seconds later, the
watchdog says so on stderr and kills it (SIGKILL: temporary files may then be left behind). It
ends by itself when the process ends (its pipe closes).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Iterator

stop_requested = threading.Event()

# seconds a signalled process gets to clean up and end before the watchdog kills it
GRACE_S = 10.0
_ENDING = (signal.SIGTERM, signal.SIGINT)


def _watch(r: int, parent: int, grace: float) -> None:
    """The watchdog's life (in the forked child): wait for a SIGTERM/SIGINT byte or EOF."""
    for s in _ENDING:
        signal.signal(s, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: not ours to end
    while True:
        data = os.read(r, 64)
        if not data:
            return  # the process ended: its end of the pipe closed
        if any(b in (int(s) for s in _ENDING) for b in data):
            break
    end = time.monotonic() + grace
    while (left := end - time.monotonic()) > 0:
        ready, _, _ = select.select([r], [], [], left)
        if ready and not os.read(r, 64):
            return  # it ended within the grace time
    if os.getppid() == parent:
        os.write(2, f"sage-dialog: still busy {grace:g} s after the signal; killing it now (temporary "
                 "files may be left behind)\n".encode())
        os.kill(parent, signal.SIGKILL)


@contextlib.contextmanager
def _watchdog(grace: float) -> Iterator[None]:
    """Fork the watchdog (see the module docstring) for the block; no-op where fork is missing."""
    if not hasattr(os, "fork"):
        yield
        return
    r, w = os.pipe()
    os.set_blocking(w, False)
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # the watchdog: keep only its pipe and stderr, so it holds no one else's files open
        code = 0
        try:
            os.closerange(3, r)
            os.closerange(r + 1, 1 << 16)
            _watch(r, parent, grace)
        except BaseException:
            code = 1
        os._exit(code)
    os.close(r)
    try:
        old = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    except (ValueError, OSError):
        old = None
    try:
        yield
    finally:
        if old is not None:
            signal.set_wakeup_fd(old)
        os.close(w)  # the watchdog sees EOF and ends
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


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
        with _watchdog(GRACE_S):
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

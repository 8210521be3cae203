"""Peak resident memory of a span of work (a pipeline stage), this process and its children.

``resource.getrusage(RUSAGE_SELF).ru_maxrss`` is the peak of the whole process lifetime: a stage
after a big one would report the big one's peak. :class:`PeakRSS` measures one span:

* this process: Linux's high-water mark ``VmHWM`` is reset when the span starts (writing ``5`` to
  ``/proc/self/clear_refs``) and read when it ends - exact, no sampling. Where the reset is refused
  (not Linux, a locked-down ``/proc``), a sampler thread reads ``VmRSS`` every ``interval_s``;
* the heap is trimmed first (``gc.collect()`` and glibc's ``malloc_trim``): memory an earlier stage
  freed goes back to the system instead of counting, and staying resident, in the next stage;
* children (training launched with ``accelerate launch``, servers): the sampler thread adds up the
  proportional set size (``Pss``: a forked child's pages shared with this process count in part) of
  every descendant process at each tick (a child still running this process's command line, between
  fork and exec, is this process's memory and is not counted). ``RUSAGE_CHILDREN`` is not used: a
  child's ``ru_maxrss`` includes this process's memory when it was forked (a ``git`` call in the
  middle of a stage reads as a child as big as the stage).

Example::

    with PeakRSS() as peak:
        work()
    peak.result()   # {"peak_rss_mb": 812.4, "peak_rss_self_mb": 790.1, "peak_rss_children_mb": 0.0}
"""

from __future__ import annotations

import os
import resource
import sys
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

_PROC = Path("/proc")


def _status_kb(pid: int | str, field: str) -> int:
    """A ``kB`` field of ``/proc/PID/status`` (0 when the process or the field is gone)."""
    try:
        for line in (_PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _pss_kb(pid: int) -> int:
    """A child's proportional set size: pages it shares with this process (a fork) count in part only."""
    try:
        for line in (_PROC / str(pid) / "smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return _status_kb(pid, "VmRSS")


def _cmdline(pid: int) -> bytes:
    try:
        return (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return b""


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (through ``/proc/PID/task/TID/children``)."""
    found: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = list((_PROC / str(p) / "task").iterdir())
        except OSError:
            continue
        for t in tasks:
            try:
                kids = [int(x) for x in (t / "children").read_text().split()]
            except (OSError, ValueError):
                continue
            found += kids
            todo += kids
    return found


def _reset_hwm() -> bool:
    """Reset this process's ``VmHWM`` to its current RSS; False where Linux refuses (or is not there)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def trim_heap() -> None:
    """Give freed memory back to the system: Python's garbage, then glibc's free heap pages.

    glibc keeps freed blocks for reuse (in one arena per thread that allocated), so after a stage
    that briefly needed gigabytes (training activations) the process stays that large.
    """
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl): nothing to trim
        pass


class PeakRSS:
    """Context manager: the peak RSS of this process and of its children during the ``with`` block."""

    def __init__(self, interval_s: float = 0.2, trim: bool = True):
        self.interval_s = interval_s
        self.trim = trim
        self.self_kb = 0
        self.children_kb = 0
        self.total_kb = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._hwm = False
        # a child with this process's command line has not exec'd yet: between subprocess's fork and
        # exec it shares this process's memory (vfork), and counting it would count this process twice
        self._cmdline = _cmdline(os.getpid())

    def _sample(self) -> None:
        me = os.getpid()
        rss = _status_kb(me, "VmRSS")
        kids = sum(_pss_kb(c) for c in _children(me) if _cmdline(c) != self._cmdline)
        self.self_kb = max(self.self_kb, rss)
        self.children_kb = max(self.children_kb, kids)
        self.total_kb = max(self.total_kb, rss + kids)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> PeakRSS:
        if self.trim:
            trim_heap()
        self._hwm = _reset_hwm()
        self._sample()
        self._thread = threading.Thread(target=self._loop, name="peak-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        if self._hwm:  # the kernel's own peak since the reset: catches spikes between two samples
            hwm = _status_kb(os.getpid(), "VmHWM")
            self.total_kb += max(0, hwm - self.self_kb)
            self.self_kb = max(self.self_kb, hwm)

    def result(self) -> dict[str, Any]:
        """``peak_rss_mb`` (this process + children at the same moment, at most), and each part's peak."""
        mb = 1024.0
        return {"peak_rss_mb": round(self.total_kb / mb, 1), "peak_rss_self_mb": round(self.self_kb / mb, 1),
                "peak_rss_children_mb": round(self.children_kb / mb, 1)}


def process_peak_mb() -> float:
    """This process's lifetime peak RSS in MB (``ru_maxrss``)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round((kb // 1024 if sys.platform == "darwin" else kb) / 1024.0, 1)

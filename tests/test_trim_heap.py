"""core.rss.trim_heap (run at every stage's start by PeakRSS): memory a stage freed but glibc kept
in its arena goes back to the system."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

import pytest
import torch

from sage_dialog.core.rss import trim_heap


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def _glibc() -> object | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt  # noqa: B018 - glibc only
    except (OSError, AttributeError):
        return None
    return libc


@pytest.mark.skipif(not sys.platform.startswith("linux") or _glibc() is None, reason="glibc only")
def test_trim_returns_freed_arena_memory():
    # as glibc ends up after a training step freed large blocks: a threshold at its ceiling, so the
    # 2 MiB blocks below come from the arena; no automatic trimming from the top in between
    libc = _glibc()
    libc.mallopt(-3, 32 * 1024 * 1024)  # M_MMAP_THRESHOLD
    libc.mallopt(-1, 1024 * 1024 * 1024)  # M_TRIM_THRESHOLD
    try:
        base = _rss_mb()
        blocks = [torch.ones(512 * 1024) for _ in range(200)]  # 200 touched 2 MiB blocks
        held = blocks[::10]
        grown = _rss_mb()
        del blocks
        kept = _rss_mb()
        assert grown - base > 300
        assert kept - base > 200, (base, grown, kept)  # freed, but still in the arena (held ones pin the heap)
        trim_heap()
        assert _rss_mb() - base < 120, (base, grown, kept, _rss_mb())  # 20 held blocks (40 MiB) and change
        assert len(held) == 20
    finally:
        libc.mallopt(-1, 128 * 1024)  # glibc's default trim threshold again

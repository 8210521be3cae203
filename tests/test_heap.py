"""core.heap: freed training-sized blocks leave RSS while training_heap is on, and stay in the heap
(until trim) once it is off, as they did before."""

from __future__ import annotations

import sys

import pytest
import torch

from sage_dialog.core import heap


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def _churn() -> tuple[float, float, float]:
    """RSS before, with 200 touched 2 MiB blocks (an activation's size), and after freeing all but one in ten."""
    base = _rss_mb()
    blocks = [torch.ones(512 * 1024) for _ in range(200)]
    held = blocks[::10]
    grown = _rss_mb()
    del blocks
    after = _rss_mb()
    assert len(held) == 20
    return base, grown, after


@pytest.mark.skipif(not sys.platform.startswith("linux") or heap._libc() is None, reason="glibc only")
def test_blocks_freed_under_training_heap_leave_rss_and_stay_without_it():
    with heap.training_heap() as ok:
        assert ok
        base, grown, after = _churn()
    assert grown - base > 300
    assert after - base < 80, (base, grown, after)  # only the 20 held blocks (40 MiB) stay
    # outside, the threshold is glibc's ceiling: the freed blocks stay in the heap's arena ...
    base, grown, after = _churn()
    assert after - base > 200, (base, grown, after)
    # ... until trimmed
    assert heap.trim()
    assert _rss_mb() - base < 120

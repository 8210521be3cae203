"""The C heap under training: freed activation memory goes back to the system instead of piling up.

glibc serves allocations below its mmap threshold from heap arenas that it rarely gives back, and it
raises that threshold (up to 32 MiB) each time a large block is freed. A training step allocates and
frees activations of 0.5-3 MiB per layer, of a size that changes with every sequence, so after a few
steps they all come from the arenas, and RSS grows to the peak of live memory plus the fragments.
While a trainer runs, blocks of 1 MiB and up are mapped one by one instead, and go back when freed.

Measured on the quickstart's LoRA SFT (SmolLM2-135M, bf16 base, 6 steps, 2 idle cores; the numbers
are in benchmarks/RESULTS-real-model.md): glibc's sliding threshold 53.5-60.1 s and 2,442-2,475 MB;
a fixed 1 MiB 42.7-43.3 s and 2,193-2,199 MB; a fixed 128 KiB 83.6 s and 1,874 MB (each small block
mapped and faulted in again: a third of the time in the kernel). Inference keeps glibc's ceiling: a
decode step's small, growing blocks are cheaper to keep in the arena (128 KiB made scoring 1.5x
slower), so the threshold is set back when training ends.

Elsewhere than glibc (macOS, musl) these are no-ops.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)

_M_MMAP_THRESHOLD = -3  # mallopt parameter numbers from glibc's malloc.h
TRAINING_THRESHOLD = 1024 * 1024  # blocks from this size up are mapped and unmapped one by one
_GLIBC_MAX_THRESHOLD = 32 * 1024 * 1024  # where glibc's own sliding threshold ends up on 64-bit


def _libc() -> Any:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt  # noqa: B018 - glibc only
        libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def trim() -> bool:
    """Give free heap pages back to the system (glibc ``malloc_trim``); True where it ran."""
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


@contextlib.contextmanager
def training_heap(threshold: int = TRAINING_THRESHOLD) -> Iterator[bool]:
    """While inside, blocks of ``threshold`` bytes and up are mapped per allocation (freed ones leave
    RSS at once); on exit the heap is trimmed and the threshold goes back to glibc's ceiling.
    Yields whether the setting took (glibc)."""
    libc = _libc()
    ok = libc is not None and libc.mallopt(_M_MMAP_THRESHOLD, int(threshold)) == 1
    try:
        yield ok
    finally:
        if ok:
            libc.mallopt(_M_MMAP_THRESHOLD, _GLIBC_MAX_THRESHOLD)
            libc.malloc_trim(0)

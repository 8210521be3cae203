"""Give the C heap's free pages back to the system between the stages of one process.

``sage-dialog run`` runs every stage in one process. glibc keeps the memory a stage freed in its heap
arenas (blocks under its mmap threshold, which rises to 32 MiB as large blocks are freed), so RSS
after a training stage stays near its peak and the next stage starts on top of it. ``malloc_trim``
returns the free pages (in every arena, not only at the top); the runner calls it after each stage.

Tried and not kept (benchmarks/RESULTS-real-model.md): a fixed mmap threshold while a trainer runs.
At 128 KiB a third of SFT's time went to the kernel (each block mapped and faulted in again); at
1 MiB SFT ran as fast and peaked lower over 6 steps, but inference at that threshold was 10-15%
slower, and the one quickstart run with it (beside a bf16 base) peaked higher, not lower.

Elsewhere than glibc (macOS, musl) this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any


def _libc() -> Any:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim  # noqa: B018 - glibc only
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

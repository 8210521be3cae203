"""CPU threads for torch and the BLAS libraries (``--threads`` on every command that loads a model).

On a small machine that others share, more threads is often slower: OpenMP threads spin waiting
for each other when the cores are busy. With two torch threads on a busy 2-core machine, generation
ran about 4x slower than with one (docs/backends.md). The default therefore counts only the cores
that are free now: the usable cores minus the whole cores the 1-minute load average says are busy,
at least 1 (a load under 1.0 leaves every core: on an idle machine the shell and the OS alone show
0.3-0.9).

Precedence: ``--threads`` on the command line, then a ``threads`` key in the config, then
``OMP_NUM_THREADS`` in the environment, then that default.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_threads() -> int:
    """Free cores now: usable cores minus the whole cores busy by the 1-minute load average, at least 1."""
    cores = usable_cores()
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not on this OS: assume idle
        load = 0.0
    return max(1, min(cores, cores - int(load)))


def resolve(threads: int | None) -> int:
    """The thread count to use: ``threads`` if given, else ``OMP_NUM_THREADS``, else the default."""
    if threads is not None:
        return threads
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return default_threads()


def apply(threads: int | None) -> int:
    """Set the thread count for libraries loaded from now on, and for torch if it is loaded.

    Returns the count used. The environment variables are read when torch, NumPy's BLAS or vLLM
    start; ``torch.set_num_threads`` covers a torch that is already imported.
    """
    n = resolve(threads)
    for var in _ENV:
        os.environ[var] = str(n)
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "set_num_threads"):
        torch.set_num_threads(n)
    return n


@contextlib.contextmanager
def restored() -> Iterator[None]:
    """Put torch's thread count back afterwards if torch was loaded before (commands run in-process)."""
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None and hasattr(torch, "get_num_threads") else None
    try:
        yield
    finally:
        if before is not None:
            torch.set_num_threads(before)  # type: ignore[union-attr]

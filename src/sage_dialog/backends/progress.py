"""Progress from the backend layer: requests finished and tokens generated, as they happen.

A stage's progress bar counts its own units (dialogs, seeds, verdicts), which can take minutes each
on a slow model. So the backends report finer steps to whoever listens::

    with progress.listen(meter):        # a callable (requests, tokens) -> None
        await backend.generate(requests)

* ``hf`` ticks the tokens of every decoding step of a batch (the rows still generating) and each
  request when its samples are done; ``openai`` and ``vllm`` tick each request, with its tokens,
  when it finishes; the response cache ticks the requests it answers itself (no tokens).
* Ticks may come from worker threads; listeners must be cheap and thread-safe. With no listener a
  tick costs one list check.

:class:`Meter` is a ready listener: it counts, derives tokens/s, and refreshes a tqdm bar's postfix
at most a few times a second (on a terminal) or at the bar's own ``mininterval`` (piped: a plain
line every few seconds, see :mod:`sage_dialog.core.console`).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

Listener = Callable[[int, int], None]  # (requests finished, tokens generated) since the last tick
L = TypeVar("L", bound=Listener)

_listeners: list[Listener] = []
_lock = threading.Lock()


def listening() -> bool:
    """Whether anyone listens (lets a backend skip counting work, e.g. a GPU sync per step)."""
    return bool(_listeners)


def tick(requests: int = 0, tokens: int = 0) -> None:
    """Report ``requests`` finished and/or ``tokens`` generated to every listener."""
    if not _listeners:
        return
    for cb in list(_listeners):
        cb(requests, tokens)


@contextlib.contextmanager
def listen(listener: L) -> Iterator[L]:
    """Call ``listener`` on every tick while the block runs."""
    with _lock:
        _listeners.append(listener)
    try:
        yield listener
    finally:
        with _lock:
            _listeners.remove(listener)


class Meter:
    """Counts ticks; ``bar`` (a tqdm bar) gets ``requests N, tokens T, X tok/s`` as its postfix."""

    def __init__(self, bar: Any = None, *, every_s: float | None = None):
        self.bar = bar
        # the bar's own pace: 0.3 s on a terminal, a line every few seconds when piped (core.console
        # sets tqdm's mininterval then); forcing a refresh faster than that would undo it
        self.every_s = every_s if every_s is not None else max(0.3, float(getattr(bar, "mininterval", 0.3) or 0.3))
        self.requests = 0
        self.tokens = 0
        self.started = time.perf_counter()
        self._shown = 0.0
        self._lock = threading.Lock()

    @property
    def tokens_per_s(self) -> float:
        secs = time.perf_counter() - self.started
        return self.tokens / secs if secs > 0 else 0.0

    def text(self) -> str:
        return f"requests {self.requests}, tokens {self.tokens}, {self.tokens_per_s:.0f} tok/s"

    def __call__(self, requests: int, tokens: int) -> None:
        with self._lock:
            self.requests += requests
            self.tokens += tokens
            now = time.perf_counter()
            if self.bar is None or now - self._shown < self.every_s:
                return
            self._shown = now
        self.bar.set_postfix_str(self.text(), refresh=True)

    def close(self) -> None:
        """Show the final counts on the bar."""
        if self.bar is not None:
            self.bar.set_postfix_str(self.text(), refresh=True)

"""A calm terminal: one progress line per stage on screen, everything else in the run's log file.

``sage-dialog`` runs every command inside :func:`session` (``-q`` / ``-v`` set the verbosity):

* the screen shows our progress lines (tqdm), results, our own warnings and errors; ``-q`` turns
  the progress lines off (``TQDM_DISABLE``), ``-v`` adds every library log line;
* library logs (transformers, datasets, accelerate, vLLM, TRL), library warnings and trainer
  dicts go to the log file opened with :func:`open_log` (``<out_dir>/logs/<stage>.log``), not to
  the screen; the hub's and datasets' own progress bars are off unless ``-v``;
* the log file is written only once the run is a few seconds old or ends (records are held in
  memory until then), so a command stopped by bad input leaves no ``logs/`` folder behind.
* when stderr is not a terminal (piped, redirected to a file, CI), progress bars become plain
  lines: each bar writes at most one line every :data:`PLAIN_EVERY_S` seconds (``TQDM_MININTERVAL``;
  ``SAGE_DIALOG_PROGRESS_EVERY`` changes it) and every frame is one whole line, without the ``\r``
  redraws and padding a terminal needs (:class:`_PlainProgress`).

Library code just uses :mod:`logging` and :mod:`tqdm`; nothing here is needed to call the stages
from Python.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import io
import logging
import os
import re
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, TextIO

from sage_dialog.core.redact import RedactingFilter

QUIET, NORMAL, VERBOSE = 0, 1, 2
_PKG = "sage_dialog"
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _State:
    verbosity = NORMAL
    log_path: Path | None = None
    file_handler: _DeferredFileHandler | None = None
    routed_transformers = False
    command_line = ""


STATE = _State()


def verbosity() -> int:
    """0 quiet (``-q``), 1 normal, 2 verbose (``-v``)."""
    return STATE.verbosity


def log_path() -> Path | None:
    """The log file of the running command, if one was opened."""
    return STATE.log_path


class _DeferredFileHandler(logging.Handler):
    """Holds records in memory until ``hold_s`` have passed (or :meth:`commit`), then writes through.

    A command that stops early on bad input thus writes no log file; a long run's log can be
    followed with ``tail -f`` after the first seconds.
    """

    def __init__(self, path: Path, hold_s: float = 5.0, capacity: int = 2000):
        super().__init__(logging.DEBUG)
        self.path = path
        self.deadline = time.monotonic() + hold_s
        self.capacity = capacity
        self.held: list[logging.LogRecord] = []
        self.stream: TextIO | None = None
        self.setFormatter(logging.Formatter(_FORMAT))
        self.addFilter(RedactingFilter())  # no secret reaches the log file

    def emit(self, record: logging.LogRecord) -> None:
        if self.stream is None:
            self.held.append(record)
            if time.monotonic() < self.deadline and len(self.held) < self.capacity:
                return
            self.commit()
            return
        self._write(record)

    def _write(self, record: logging.LogRecord) -> None:
        try:
            assert self.stream is not None
            self.stream.write(self.format(record) + "\n")
            self.stream.flush()
        except Exception:
            self.handleError(record)

    def commit(self) -> None:
        """Open the file (folders made) and write the held records; later records go straight in."""
        if self.stream is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.stream = self.path.open("a", encoding="utf-8")
            held, self.held = self.held, []
            for r in held:
                self._write(r)

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
        self.held = []
        super().close()


PLAIN_EVERY_S = 10.0
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def plain_every_s() -> float:
    """Seconds between progress lines when stderr is not a terminal."""
    try:
        return max(0.1, float(os.environ.get("SAGE_DIALOG_PROGRESS_EVERY", PLAIN_EVERY_S)))
    except ValueError:
        return PLAIN_EVERY_S


class _PlainProgress(io.TextIOBase):
    """stderr that is not a terminal: progress-bar frames (``\r`` + text) become plain lines, at most
    one every ``every_s`` seconds.

    tqdm draws a bar by writing ``\r`` + the bar + padding many times on one terminal line; in a
    file or a pipe those frames pile up (the demo wrote 581 frames on 53 lines). Here a frame is
    written as its own line (padding and cursor escapes dropped) when ``every_s`` have passed since
    the last one; the last frame of a bar is written when the bar closes (the newline tqdm writes
    then is absorbed). Everything else passes through unchanged.
    """

    def __init__(self, inner: TextIO, every_s: float | None = None):
        self.inner = inner
        self.every_s = plain_every_s() if every_s is None else every_s
        self._shown = ""
        self._pending = ""
        self._last_t = -1e9
        self._after_frame = False
        self._lock = threading.Lock()

    def _emit(self, text: str) -> None:
        if text != self._shown:
            self.inner.write(text + "\n")
            self._shown = text
        self._pending = ""
        self._last_t = time.monotonic()

    def write(self, s: str) -> int:
        with self._lock:
            if "\r" in s:
                for part in s.split("\r"):
                    text = _ANSI.sub("", part).rstrip()
                    if not text:
                        continue
                    if time.monotonic() - self._last_t >= self.every_s:
                        self._emit(text)
                    else:
                        self._pending = text
                self._after_frame = True
                return len(s)
            if self._after_frame and s.strip("\n") == "":  # a bar closed: its last frame, then a new bar
                if self._pending:
                    self._emit(self._pending)
                self._after_frame, self._last_t, self._shown = False, -1e9, ""
                return len(s)
            self._after_frame = False
            return self.inner.write(s)

    def flush(self) -> None:
        self.inner.flush()

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self.inner.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.inner, "encoding", "utf-8")


class _ScreenFilter(logging.Filter):
    """Our own warnings and errors always; library records only with ``-v``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if STATE.verbosity >= VERBOSE:
            return True
        ours = record.name == _PKG or record.name.startswith(_PKG + ".")
        return ours and record.levelno >= (logging.ERROR if STATE.verbosity == QUIET else logging.WARNING)


class _OneLine(logging.Formatter):
    """``warning: message``, like the rest of the command's output."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.getMessage()}"


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: TextIO | None = None, line: str | None = None) -> None:
    """Our warnings on screen as one line; library warnings into the log file."""
    if f"{os.sep}{_PKG}{os.sep}" in filename and STATE.verbosity > QUIET:
        print(f"warning: {message}", file=sys.stderr)
    text = warnings.formatwarning(message, category, filename, lineno, line).rstrip()
    logging.getLogger("py.warnings").warning(text)


class _TransformersLoggingHook(importlib.abc.MetaPathFinder):
    """When ``transformers.utils.logging`` is first imported, route its logs to ours.

    transformers writes to stderr through its own handler and does not propagate; importing it
    only to change that would cost seconds on commands that never load it.
    """

    NAME = "transformers.utils.logging"

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None) -> Any:
        if fullname != self.NAME:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        loader = spec.loader
        exec_module = loader.exec_module  # type: ignore[attr-defined]

        def exec_and_route(module: ModuleType) -> None:
            exec_module(module)
            _route_transformers(module)

        loader.exec_module = exec_and_route  # type: ignore[method-assign]
        return spec


def _route_transformers(module: Any) -> None:
    if STATE.verbosity >= VERBOSE:
        return
    module.disable_default_handler()
    module.enable_propagation()
    module.set_verbosity_info()
    module.disable_progress_bar()  # "Loading weights" and friends (read from the env only at import)
    STATE.routed_transformers = True


def _unroute_transformers() -> None:
    module = sys.modules.get("transformers.utils.logging")
    if STATE.routed_transformers and module is not None:
        module.enable_default_handler()
        module.disable_propagation()
        module.set_verbosity_warning()
        module.enable_progress_bar()
    STATE.routed_transformers = False


@contextlib.contextmanager
def session(level: int = NORMAL, command_line: Sequence[str] = ()) -> Iterator[None]:
    """Set up the screen and logging for one command; restore everything afterwards.

    ``command_line`` is written at the top of the log file.
    """
    saved_env = dict(os.environ)
    root = logging.getLogger()
    saved_level = root.level
    saved_show = warnings.showwarning
    STATE.verbosity = level
    STATE.command_line = " ".join(command_line)
    env = {"VLLM_CONFIGURE_LOGGING": "0", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
           "HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "TOKENIZERS_PARALLELISM": "false"}
    if level == QUIET:
        env["TQDM_DISABLE"] = "1"
    if level >= VERBOSE:
        env = {"TOKENIZERS_PARALLELISM": "false"}
    saved_stderr = sys.stderr
    plain = level == NORMAL and not _isatty(sys.stderr)
    if plain:  # piped or logged: a plain progress line every few seconds, not bar frames
        env["TQDM_MININTERVAL"] = str(plain_every_s())
        sys.stderr = _PlainProgress(sys.stderr)  # type: ignore[assignment]
    for k, v in env.items():
        os.environ.setdefault(k, v)
    screen = logging.StreamHandler(sys.stderr)
    screen.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s") if level >= VERBOSE
                        else _OneLine())
    screen.addFilter(_ScreenFilter())
    screen.addFilter(RedactingFilter())
    root.addHandler(screen)
    root.setLevel(logging.DEBUG if level >= VERBOSE else logging.INFO)
    warnings.showwarning = _show_warning
    hook = _TransformersLoggingHook()
    sys.meta_path.insert(0, hook)
    if "transformers.utils.logging" in sys.modules:
        _route_transformers(sys.modules["transformers.utils.logging"])
    _quiet_loaded_libraries()
    try:
        yield
    finally:
        close_log()
        sys.meta_path.remove(hook)
        _unroute_transformers()
        warnings.showwarning = saved_show
        root.removeHandler(screen)
        root.setLevel(saved_level)
        if plain and isinstance(sys.stderr, _PlainProgress):
            sys.stderr.flush()
            sys.stderr = saved_stderr
        os.environ.clear()
        os.environ.update(saved_env)
        STATE.verbosity = NORMAL
        STATE.command_line = ""


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or odd streams: not a terminal
        return False


def _quiet_loaded_libraries() -> None:
    """Progress bars of libraries that are already imported (their env vars are read at import)."""
    if STATE.verbosity >= VERBOSE:
        return
    ds = sys.modules.get("datasets")
    if ds is not None and hasattr(ds, "disable_progress_bars"):
        ds.disable_progress_bars()
    hub = sys.modules.get("huggingface_hub.utils")
    if hub is not None and hasattr(hub, "disable_progress_bars"):
        hub.disable_progress_bars()


def open_log(path: str | Path, *, carry_over: bool = False) -> Path:
    """Send log records to ``path`` from now on; the earlier log file (if any) is finished.

    ``carry_over``: the same command found its real output folder only now (from its config): the
    records held for the earlier path, if none was written yet, move to ``path`` instead.
    """
    p = Path(path)
    if STATE.log_path is not None and STATE.log_path.resolve() == p.resolve():
        return p
    handler = _DeferredFileHandler(p)
    handler.addFilter(RedactingFilter())  # a key a server echoed never reaches the log file
    old = STATE.file_handler
    moved = carry_over and old is not None and old.stream is None
    if moved:  # nothing written yet: the records move to the new file, the old one is never made
        handler.held, old.held = old.held, []  # type: ignore[union-attr]
    close_log(keep=not moved)
    logging.getLogger().addHandler(handler)
    STATE.log_path, STATE.file_handler = p, handler
    if not moved:
        logging.getLogger(_PKG).info("%s", STATE.command_line or "(called from Python)")
    return p


def stage_log(out_dir: str | Path, stage: str, *, carry_over: bool = False) -> Path:
    """Open ``<out_dir>/logs/<stage>.log`` as the log file from now on (see :func:`open_log`)."""
    return open_log(Path(out_dir) / "logs" / f"{stage}.log", carry_over=carry_over)


def commit_log() -> Path | None:
    """Write the held records now (a failing run names its log file, so the file must exist)."""
    if STATE.file_handler is not None:
        STATE.file_handler.commit()
    return STATE.log_path


def close_log(*, keep: bool = True) -> None:
    """Detach the log file; with ``keep`` false, records still held in memory are dropped."""
    h = STATE.file_handler
    if h is None:
        return
    if keep:
        h.commit()
    logging.getLogger().removeHandler(h)
    h.close()
    STATE.log_path, STATE.file_handler = None, None

"""Bounds on what one input may cost: record length, document size, and text that is not Unicode.

Every reader goes through these so that no input, however hostile, grows memory without bound
(``/dev/zero`` read as JSONL is one endless line) and no string that cannot be written back (a lone
UTF-16 surrogate from a ``"\\ud800"`` escape) gets past the reader to crash a writer later:

* :data:`MAX_RECORD_CHARS` - one JSONL record (one line); :func:`bounded_lines` reads lines with it;
* :data:`MAX_DOCUMENT_BYTES` - one whole JSON document (``read_json``); :data:`MAX_SMALL_FILE_BYTES`
  - a config, prompt, label list or mock script; :func:`read_bounded` reads a file with a cap;
* :func:`check_unicode` - the field that holds a lone surrogate, named.

The limits are far above any real record (a search-tree node, a whole dialog) and far below what
a machine runs out of.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from sage_dialog.core.errors import UserError, where

MAX_RECORD_CHARS = 32 * 2**20
MAX_DOCUMENT_BYTES = 256 * 2**20
MAX_SMALL_FILE_BYTES = 16 * 2**20


def _mib(n: int) -> str:
    return f"{n // 2**20} MiB"


def bounded_lines(fh: IO[bytes], path: object, *, limit: int = MAX_RECORD_CHARS) -> Iterator[tuple[int, bytes]]:
    """``(line_number, raw_line)`` of a binary file, 1-based; a line longer than ``limit`` bytes is a
    :class:`UserError` naming the record (read no further than ``limit + 1`` bytes of it)."""
    lineno = 0
    while True:
        raw = fh.readline(limit + 1)
        if not raw:
            return
        lineno += 1
        if len(raw) > limit and not raw.endswith(b"\n"):
            raise UserError(f"{where(path, lineno)}: record longer than {_mib(limit)} "
                            "(a JSONL record is one line; is this a JSONL file?)")
        yield lineno, raw


def read_bounded(path: str | Path, *, limit: int = MAX_SMALL_FILE_BYTES, what: str = "file") -> bytes:
    """The bytes of ``path``, or a :class:`UserError` when it holds more than ``limit`` bytes (a
    device or a FIFO that never ends is read no further than that)."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            data = fh.read(limit + 1)
    except FileNotFoundError:
        raise UserError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{p}: is a directory, expected a file") from None
    if len(data) > limit:
        raise UserError(f"{p}: {what} larger than {_mib(limit)}; refusing to read it")
    return data


_SURROGATE = re.compile("[\ud800-\udfff]")
_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def has_surrogate_escape(text: str) -> bool:
    """Whether JSON/YAML source text has a ``\\uD8xx``-``\\uDFxx`` escape (the only way a lone
    surrogate gets into a parsed value: UTF-8 decoding refuses encoded ones)."""
    return _ESCAPE.search(text) is not None


def find_surrogate(obj: Any, path: str = "") -> tuple[str, str] | None:
    """``(field, char)`` of the first string in ``obj`` (keys included) with a lone surrogate."""
    stack: list[tuple[Any, str]] = [(obj, path)]
    while stack:
        cur, at = stack.pop()
        if isinstance(cur, str):
            m = _SURROGATE.search(cur)
            if m:
                return at, m.group()
        elif isinstance(cur, dict):
            for k, v in reversed(list(cur.items())):
                key = f"{at}.{k}" if at else str(k)
                if isinstance(k, str) and _SURROGATE.search(k):
                    return key, _SURROGATE.search(k).group()  # type: ignore[union-attr]
                stack.append((v, key))
        elif isinstance(cur, list):
            stack.extend((v, f"{at}[{i}]") for i, v in reversed(list(enumerate(cur))))
    return None


def check_unicode(obj: Any, loc: str) -> None:
    """Raise a :class:`UserError` (``loc: field F: ...``) when a string of ``obj`` holds a lone
    surrogate: such text cannot be written as UTF-8, so it is refused where it is read."""
    found = find_surrogate(obj)
    if found is not None:
        field, ch = found
        m = re.match(r"\[(\d+)\]\.?", field)
        if m is not None and isinstance(obj, list):  # a JSON array of records: name the record
            loc, field = f"{loc}: record {int(m.group(1)) + 1}", field[m.end():]
        at = f"{loc}: field {field}" if field else loc
        raise UserError(f"{at}: lone surrogate \\u{ord(ch):04x} is not Unicode text "
                        "(a \\ud800-\\udfff escape must be half of a pair)")


__all__ = ["MAX_DOCUMENT_BYTES", "MAX_RECORD_CHARS", "MAX_SMALL_FILE_BYTES", "bounded_lines", "check_unicode",
           "find_surrogate", "has_surrogate_escape", "read_bounded"]

"""File-system failures said in one line: a full disk, a symbolic-link loop.

A full disk shows up as an ``OSError`` without a file name from deep inside a writer (``ENOSPC``;
``EDQUOT`` over quota; ``EFBIG`` past a file-size limit such as ``ulimit -f``). The CLI turns it into
one line naming the command's output (:func:`disk_full_error`); the atomic writers have already
removed their temporary files, so nothing partial is left. Python 3.11's ``Path.resolve()`` reports
a link that points back to itself as a ``RuntimeError``; :func:`symlink_loop` recognises it.
"""

from __future__ import annotations

import errno
import re

from sage_dialog.core.errors import UserError

_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_LOOP = re.compile(r"^Symlink loop from (?P<path>'.*'|\".*\")$")


def disk_full_error(e: OSError, output: object = None) -> UserError | None:
    """The one-line error for a full disk (or a file-size limit), naming ``output`` (the command's
    output path) or the file the error names; ``None`` for any other ``OSError``."""
    if e.errno not in _FULL:
        return None
    where = e.filename if e.filename is not None else output
    what = "no space left on the device" if e.errno == errno.ENOSPC else \
        "disk quota exceeded" if e.errno == errno.EDQUOT else "file too large (a file-size limit: ulimit -f)"
    head = f"{where}: " if where is not None else ""
    return UserError(f"{head}cannot write: {what} (free some space or write elsewhere, then run the same command again)")


def symlink_loop(e: RuntimeError) -> str | None:
    """The one-line error for ``Path.resolve()``'s "Symlink loop from '...'", else ``None``."""
    m = _LOOP.match(str(e))
    if m is None:
        return None
    return f"{m.group('path')[1:-1]}: symbolic link loop (a link that leads back to itself); choose another path"


__all__ = ["disk_full_error", "symlink_loop"]

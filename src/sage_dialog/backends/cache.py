"""Content-addressed response cache (SQLite) shared by all stages; see :class:`CachedBackend`."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def path_fingerprint(path: str | os.PathLike[str] | None) -> str | None:
    """A cheap content fingerprint of a local model/adapter directory (None for hub ids / missing).

    Hashes every file's relative name and size, the whole of small files (configs, tokenizers) and
    the first and last MiB of large ones (weights): a retrained adapter saved to the same path gets
    a new fingerprint, without reading gigabytes.
    """
    if path is None:
        return None
    p = Path(path)
    if not p.exists():
        return None
    h = hashlib.sha256()
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    for f in files:
        size = f.stat().st_size
        h.update(f"{f.relative_to(p) if f != p else f.name}\0{size}\0".encode())
        with f.open("rb") as fh:
            if size <= 4 << 20:
                h.update(fh.read())
            else:
                h.update(fh.read(1 << 20))
                fh.seek(size - (1 << 20))
                h.update(fh.read(1 << 20))
    return h.hexdigest()[:32]

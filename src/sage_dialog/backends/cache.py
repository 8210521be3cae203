"""Content-addressed response cache (SQLite) shared by all stages; see :class:`CachedBackend`.

Use it through a backend config (``cache: runs/cache.sqlite``) or directly::

    backend = CachedBackend(load_backend("hf:path/to/model"), "runs/cache.sqlite")
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from sage_dialog.backends import progress
from sage_dialog.backends.base import (
    Backend,
    BackendError,
    ChatRequest,
    ChatResult,
    ChatStream,
    Completion,
    ScoreRequest,
    ScoreResult,
)
from sage_dialog.core.errors import UserError


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


def local_model_identity(provider: str, model: str, adapter: str | None) -> dict[str, Any]:
    """The cache identity of an in-process backend: names plus content fingerprints of the model and
    adapter folders, so a model retrained into the same path does not hit old entries."""
    return {
        "provider": provider,
        "model": model,
        "adapter": adapter,
        "fingerprint": {"model": path_fingerprint(model), "adapter": path_fingerprint(adapter) if adapter else None},
    }


# ---------------------------------------------------------------------------------------------
# the response cache

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    created REAL NOT NULL
)
"""


_SQLITE_MAGIC = b"SQLite format 3\x00"


def _missing_parents(path: Path) -> list[Path]:
    """The folders above ``path`` that do not exist yet, deepest first."""
    out = []
    p = path.parent
    while not p.exists() and p != p.parent:
        out.append(p)
        p = p.parent
    return out


def check_cache_path(path: str | os.PathLike[str]) -> None:
    """A :class:`UserError` naming ``path`` unless it can be a response cache: absent, empty, or a
    SQLite database (a JSONL file given by mistake is refused before it is touched)."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{p}: is a folder; the response cache is one SQLite file (e.g. {p / 'cache.sqlite'})")
    if p.exists():
        if not p.is_file():
            raise UserError(f"{p}: is not a regular file; the response cache is one SQLite file")
        try:
            with p.open("rb") as fh:
                head = fh.read(len(_SQLITE_MAGIC))
        except OSError as e:
            raise UserError(f"{p}: cannot read the response cache ({e.strerror or e})") from None
        if head and head != _SQLITE_MAGIC:
            raise UserError(f"{p}: is not a response cache (not a SQLite file); give --cache a new path "
                            "or an existing cache")


class ResponseCache:
    """A content-addressed SQLite store: ``key`` (sha256 of identity + request + sample) -> JSON.

    Safe with concurrent writers (several processes or stages sharing one file): WAL journal, a
    busy timeout, short transactions and ``INSERT OR IGNORE`` (the first writer of a key wins; a
    key's content is determined by the key anyway).
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout_s: float = 60.0):
        self.path = Path(path)
        check_cache_path(self.path)
        made = _missing_parents(self.path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, timeout=timeout_s, check_same_thread=False, isolation_level=None
            )
            self._db.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
            self._retry(lambda: self._db.execute("PRAGMA journal_mode = WAL"))
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._retry(lambda: self._db.execute(_SCHEMA))
        except (sqlite3.Error, OSError) as e:
            # a read-only file system, a folder we may not write in, a file that is not a database:
            # say which path, and take back what we made on the way
            if getattr(self, "_db", None) is not None:
                self._db.close()
            existed = not made and self.path.exists() and self.path.stat().st_size > 0
            if not existed:
                for extra in ("", "-wal", "-shm", "-journal"):
                    with contextlib.suppress(OSError):
                        Path(str(self.path) + extra).unlink()
            for d in made:
                with contextlib.suppress(OSError):
                    d.rmdir()
            reason = getattr(e, "strerror", None) or str(e)
            raise UserError(f"{self.path}: cannot use as the response cache ({reason})") from None

    def _retry(self, fn: Any, attempts: int = 20) -> Any:
        # busy_timeout covers most contention; WAL set-up and schema creation can still race.
        for i in range(attempts):
            try:
                return fn()
            except sqlite3.OperationalError as e:
                if ("locked" not in str(e) and "busy" not in str(e)) or i == attempts - 1:
                    raise
                time.sleep(0.05 * (i + 1))
        return None

    @staticmethod
    def key(*parts: Any) -> str:
        blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        with self._lock:
            for i in range(0, len(keys), 500):  # stay under SQLite's host-parameter limit
                chunk = keys[i : i + 500]
                q = f"SELECT key, value FROM responses WHERE key IN ({','.join('?' * len(chunk))})"
                for k, v in self._retry(lambda q=q, chunk=chunk: self._db.execute(q, chunk).fetchall()):
                    out[k] = json.loads(v)
        return out

    def put_many(self, kind: str, items: list[tuple[str, Any]]) -> None:
        if not items:
            return
        now = time.time()
        rows = [(k, kind, json.dumps(v, ensure_ascii=False), now) for k, v in items]

        def write() -> None:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT OR IGNORE INTO responses VALUES (?, ?, ?, ?)", rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

        with self._lock:
            self._retry(write)

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


class CachedBackend(Backend):
    """Wrap a backend with the response cache: re-running finished work makes zero model calls.

    Generation is cached per sample: the key is ``(backend identity, request.key_dict(), sample
    index)``, so asking for ``n=5`` after ``n=4`` computes one new sample (the inner backend is
    asked for ``n=1, sample_offset=4``). Each request is sent to the inner backend as its own call
    (batching backends merge concurrent calls again) and stored as soon as it finishes, so a run
    killed half-way keeps what it finished. Completions with ``finish_reason="error"`` are not
    stored. Hits come back with ``cached=True``; ``hits`` / ``misses`` count samples.
    """

    def __init__(self, inner: Backend, path: str | os.PathLike[str] | ResponseCache):
        super().__init__(inner.model)
        self.inner = inner
        self.provider = inner.provider
        self.store = path if isinstance(path, ResponseCache) else ResponseCache(path)
        from sage_dialog.core.io import note_kept

        note_kept(self.store.path, "response cache: finished model calls are not made (or paid) again")
        self.hits = 0
        self.misses = 0

    @property
    def name(self) -> str:
        return self.inner.name

    def identity(self) -> dict[str, Any]:
        return self.inner.identity()

    @property
    def supports_scoring(self) -> bool:
        return self.inner.supports_scoring

    def _gen_keys(self, req: ChatRequest) -> list[str]:
        ident = self.identity()
        kd = req.key_dict()
        return [self.store.key("gen", ident, kd, i) for i in range(req.n)]

    async def generate(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        keys = [self._gen_keys(r) for r in requests]
        found = self.store.get_many([k for ks in keys for k in ks])
        results: list[list[Completion | None]] = []
        tokens_in: list[int] = [0] * len(requests)
        calls = []
        for ri, (req, ks) in enumerate(zip(requests, keys, strict=True)):
            slots: list[Completion | None] = []
            for k in ks:
                hit = found.get(k)
                if hit is None:
                    slots.append(None)
                else:
                    tokens_in[ri] = hit.get("tokens_in", 0)
                    slots.append(
                        Completion(hit["text"], hit["finish_reason"], hit.get("tokens_out", 0), cached=True)
                    )
            results.append(slots)
            self.hits += sum(s is not None for s in slots)
            for start, count in _missing_runs(slots):
                sub = dataclasses.replace(req, n=count, sample_offset=req.sample_offset + start)
                calls.append((ri, start, count, sub))
        self.misses += sum(c[2] for c in calls)
        answered = {c[0] for c in calls}
        progress.tick(requests=sum(ri not in answered for ri in range(len(requests))))  # wholly from the cache

        async def one(ri: int, start: int, count: int, sub: ChatRequest) -> None:
            [res] = await self.inner.generate([sub])
            if len(res.completions) != count:
                raise BackendError(
                    "bad_response", f"{self.name} returned {len(res.completions)} of {count} samples"
                )
            tokens_in[ri] = res.tokens_in
            to_store = []
            for j, c in enumerate(res.completions):
                results[ri][start + j] = c
                if c.finish_reason != "error":
                    d = {"text": c.text, "finish_reason": c.finish_reason, "tokens_out": c.tokens_out}
                    to_store.append((keys[ri][start + j], {**d, "tokens_in": res.tokens_in}))
            self.store.put_many("gen", to_store)  # at once: a killed run keeps what finished

        outcomes = await asyncio.gather(*(one(*c) for c in calls), return_exceptions=True)
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        if errors:
            raise errors[0]
        return [
            ChatResult(completions=[c for c in slots if c is not None], tokens_in=tokens_in[ri])
            for ri, slots in enumerate(results)
        ]

    @property
    def supports_streaming(self) -> bool:
        return self.inner.supports_streaming

    async def _stream(self, request: ChatRequest, out: ChatStream) -> AsyncIterator[str]:
        """A cached sample is yielded whole; a miss streams from the inner backend and is stored
        once it has run to its end (not when the consumer stopped early)."""
        key = self.store.key("gen", self.identity(), request.key_dict(), request.sample_offset)
        hit = self.store.get_many([key]).get(key)
        if hit is not None:
            self.hits += 1
            out.tokens_in = hit.get("tokens_in", 0)
            out.completion = Completion(hit["text"], hit["finish_reason"], hit.get("tokens_out", 0), cached=True)
            if hit["text"]:
                yield hit["text"]
            return
        self.misses += 1
        async with self.inner.stream(request) as inner:
            async for piece in inner:
                yield piece
        c = inner.completion
        if c is not None and c.finish_reason != "error":
            out.completion, out.tokens_in = c, inner.tokens_in
            d = {"text": c.text, "finish_reason": c.finish_reason, "tokens_out": c.tokens_out}
            self.store.put_many("gen", [(key, {**d, "tokens_in": inner.tokens_in})])

    async def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        ident = self.identity()
        keys = [self.store.key("score", ident, r.key_dict()) for r in requests]
        found = self.store.get_many(keys)
        out: list[ScoreResult | None] = []
        todo: list[int] = []
        for i, k in enumerate(keys):
            hit = found.get(k)
            if hit is None:
                out.append(None)
                todo.append(i)
            else:
                out.append(ScoreResult(hit["logprobs"], hit.get("tokens_in", 0), cached=True))
        self.hits += len(requests) - len(todo)
        self.misses += len(todo)
        if todo:
            fresh = await self.inner.score([requests[i] for i in todo])
            for i, r in zip(todo, fresh, strict=True):
                out[i] = r
            self.store.put_many(
                "score",
                [
                    (keys[i], {"logprobs": r.logprobs, "tokens_in": r.tokens_in})
                    for i, r in zip(todo, fresh, strict=True)
                ],
            )
        return [r for r in out if r is not None]

    async def aclose(self) -> None:
        await self.inner.aclose()
        self.store.close()


def _missing_runs(slots: Sequence[object | None]) -> list[tuple[int, int]]:
    """Contiguous runs ``(start, count)`` of missing (None) slots."""
    runs: list[tuple[int, int]] = []
    start = None
    for i, s in enumerate([*slots, 0]):
        if s is None and start is None:
            start = i
        elif s is not None and start is not None:
            runs.append((start, i - start))
            start = None
    return runs

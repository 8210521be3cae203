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

_SMALL = 4 << 20  # files up to this size are hashed whole on every call (configs, tokenizers, small adapters)
_DIGESTS: dict[tuple[str, int, int], str] = {}


def _digest_file() -> Path:
    from sage_dialog.backends.gguf import cache_root

    return cache_root() / "digests.json"


def file_digest(path: Path) -> str:
    """The SHA-256 of a file's whole content, computed once per (path, size, mtime) and remembered.

    Large weights are read once (a 540 MB model ~1-2 s); the digest is kept in the process and in
    ``$SAGE_DIALOG_CACHE/digests.json``, keyed by the resolved path, size and modification time, so a
    file rewritten in place (a retrained model saved to the same folder) is hashed again.
    """
    st = path.stat()
    k = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if k in _DIGESTS:
        return _DIGESTS[k]
    store = _digest_file()
    skey = f"{k[0]}|{k[1]}|{k[2]}"
    try:
        known = json.loads(store.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    digest = known.get(skey) if isinstance(known, dict) else None
    if not isinstance(digest, str):
        h = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
        digest = h.hexdigest()
        known = known if isinstance(known, dict) else {}
        known[skey] = digest
        try:  # best effort: a read-only cache only costs a re-hash in the next process
            store.parent.mkdir(parents=True, exist_ok=True)
            tmp = store.with_name(f".{store.name}.{os.getpid()}.{threading.get_ident()}")
            tmp.write_text(json.dumps(known), encoding="utf-8")
            os.replace(tmp, store)
        except OSError:
            pass
    _DIGESTS[k] = digest
    return digest


def path_fingerprint(path: str | os.PathLike[str] | None) -> str | None:
    """A content fingerprint of a local model/adapter directory or file (None for hub ids / missing).

    Hashes every file's relative name and content: small files (configs, tokenizer, chat template)
    are read on every call, large ones (weights) through :func:`file_digest`, read once and
    remembered by path, size and mtime. A model retrained into the same path, an edited chat
    template or tokenizer, gets a new fingerprint.
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
        if size <= _SMALL:
            h.update(f.read_bytes())
        else:
            h.update(file_digest(f).encode())
    return h.hexdigest()[:32]


def hub_revision(model: str) -> str | None:
    """The commit of a hub model's local snapshot (the identity of what was downloaded), or None."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(model, "config.json")
    except Exception:  # not a repo id, no huggingface_hub: no snapshot to name
        return None
    return Path(found).parent.name if isinstance(found, str) else None


def model_fingerprint(model: str) -> str | None:
    """The fingerprint of what ``model`` names: a folder's content, a GGUF file's (short names
    included), or a hub snapshot's commit."""
    from sage_dialog.backends.gguf import gguf_source

    try:
        src = gguf_source(model)
    except Exception:  # a missing .gguf: the backend reports it when loading
        src = None
    if src is not None:
        return path_fingerprint(src)
    fp = path_fingerprint(model)
    if fp is None and not Path(model).exists():
        rev = hub_revision(model)
        return f"hub:{rev}" if rev else None
    return fp


def local_model_identity(provider: str, model: str, adapter: str | None,
                         options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The cache identity of an in-process backend: names, content fingerprints of the model and
    adapter, and the ``options`` that change its outputs (dtype, attention, ...), so a model
    retrained into the same path, or loaded differently, does not hit old entries."""
    ident: dict[str, Any] = {
        "provider": provider,
        "model": model,
        "adapter": adapter,
        "fingerprint": {"model": model_fingerprint(model), "adapter": path_fingerprint(adapter) if adapter else None},
    }
    if options:
        ident["options"] = options
    return ident


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

    Generation is cached per sample: the key is ``(backend identity, inner.request_key(request),
    sample index)`` - the identity holds the model's and adapter's content fingerprints and the
    backend options that change outputs; the request key holds what the backend makes of the
    request (for ``hf:`` the rendered prompt, so a new chat template or prefill healing is a new
    key), the sampling settings, the schema and the logprobs asked for - so asking for ``n=5`` after ``n=4`` computes one new sample (the inner backend is
    asked for ``n=1, sample_offset=4``). Each request is sent to the inner backend as its own call
    (batching backends merge concurrent calls again) and stored as soon as it finishes, so a run
    killed half-way keeps what it finished. Completions with ``finish_reason="error"`` are not
    stored. Token logprobs are stored with each sample and come back on a hit. Hits come back
    with ``cached=True``; ``hits`` / ``misses`` count samples.
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

    @property
    def supports_logprobs(self) -> bool:
        return bool(getattr(self.inner, "supports_logprobs", False))

    def request_key(self, request: ChatRequest | ScoreRequest) -> dict[str, Any]:
        return self.inner.request_key(request)

    def _gen_keys(self, req: ChatRequest) -> list[str]:
        ident = self.identity()
        kd = self.inner.request_key(req)
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
                    slots.append(_completion(hit))
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
                    to_store.append((keys[ri][start + j], _stored(c, res.tokens_in)))
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
        key = self.store.key("gen", self.identity(), self.inner.request_key(request), request.sample_offset)
        hit = self.store.get_many([key]).get(key)
        if hit is not None:
            self.hits += 1
            out.tokens_in = hit.get("tokens_in", 0)
            out.completion = _completion(hit)
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
            self.store.put_many("gen", [(key, _stored(c, inner.tokens_in))])

    async def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        ident = self.identity()
        keys = [self.store.key("score", ident, self.inner.request_key(r)) for r in requests]
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


def _stored(c: Completion, tokens_in: int) -> dict[str, Any]:
    """One sample as stored: text, finish reason, token counts and (when asked for) token logprobs."""
    d: dict[str, Any] = {"text": c.text, "finish_reason": c.finish_reason, "tokens_out": c.tokens_out,
                         "tokens_in": tokens_in}
    if c.logprobs is not None:
        d["logprobs"] = c.logprobs
    return d


def _completion(hit: dict[str, Any]) -> Completion:
    return Completion(hit["text"], hit["finish_reason"], hit.get("tokens_out", 0), cached=True,
                      logprobs=hit.get("logprobs"))


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

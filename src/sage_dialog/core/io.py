"""JSON / JSONL reading and writing, atomic outputs, run directories and manifests.

* Readers stream JSONL line by line and validate each record against a pydantic model; every
  problem is reported with file, record (1-based line) and field, as a :class:`UserError`.
* Writers never leave a half-written file where a whole one is expected: they write to a temporary
  file in the same folder and rename it (``atomic_write``), or append whole lines to a journal that
  is read back up to its last complete line (``JsonlJournal``), which is how stages resume.
* What a stage keeps for resuming (journals, the response cache, finished pipeline stages) is noted
  with :func:`note_kept`, so an interrupted command can say what it kept (:func:`kept_for_resume`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from importlib import metadata
from pathlib import Path
from typing import IO, Any, TypeVar

from pydantic import BaseModel, ValidationError

from sage_dialog.core.errors import UserError, where
from sage_dialog.core.limits import (
    MAX_DOCUMENT_BYTES,
    bounded_lines,
    check_unicode,
    has_surrogate_escape,
    read_bounded,
)
from sage_dialog.core.schema import Manifest, utc_now

M = TypeVar("M", bound=BaseModel)


def format_validation_error(path: object, record: object, err: ValidationError) -> list[str]:
    """One line per pydantic error, naming file, record and the dotted field path."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in e["loc"]).replace(".[", "[")
        lines.append(f"{where(path, record, loc or None)}: {e['msg']}")
    return lines


def _reject_constant(name: str) -> Any:
    # NaN compares false with everything and poisons every filter on scores; -Infinity (a log
    # probability of zero, which Python's json writes) orders correctly and is read
    if name == "NaN":
        raise ValueError(f"{name} is not valid JSON (write a number or null)")
    return float(name)


def loads_json(text: str, loc: str, *, line_numbers: bool = True) -> Any:
    """Parse one JSON document; every way it can fail is a :class:`UserError` starting with ``loc``.

    The one JSON reader of the project: a leading byte-order mark is skipped, ``NaN`` is refused (it
    is not JSON and poisons scores; ``Infinity``, which Python's writer emits for a log probability of
    zero, is read), and input nested too deeply or holding an
    integer longer than Python converts is refused with a message instead of a traceback.
    """
    text = text.removeprefix("\ufeff")
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
        if has_surrogate_escape(text):  # cheap test first: only an escape can make a lone surrogate
            check_unicode(obj, loc)
        return obj
    except json.JSONDecodeError as e:
        pos = f"line {e.lineno}, column {e.colno}" if line_numbers else f"column {e.colno}"
        raise UserError(f"{loc}: malformed JSON: {e.msg} ({pos})") from None
    except RecursionError:  # the C parser guards its recursion; no linear pre-scan of big files needed
        raise UserError(f"{loc}: malformed JSON: nested too deeply") from None
    except ValueError as e:  # NaN/Infinity, or an integer of more digits than int() converts
        msg = str(e).split(";")[0]
        if "digits" in msg:
            msg = "an integer with too many digits"
        raise UserError(f"{loc}: malformed JSON: {msg}") from None


def _open_text(path: Path) -> IO[str]:
    try:
        return path.open("r", encoding="utf-8", newline="")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, expected a file") from None


def iter_text_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` (1-based, line end removed), streaming; a byte that is not
    UTF-8 is a :class:`UserError` naming the file and line, and so is a line longer than
    :data:`limits.MAX_RECORD_CHARS` (memory stays bounded on ``/dev/zero``)."""
    p = Path(path)
    try:  # opened once: a FIFO (``<(zcat file)``) can be read only once
        fh = p.open("rb")
    except FileNotFoundError:
        raise UserError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{p}: is a directory, expected a file") from None
    with fh:
        for lineno, raw in bounded_lines(fh, p):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise UserError(f"{where(p, lineno)}: not UTF-8 text ({e.reason} at byte {e.start})") from None
            if lineno == 1:
                line = line.removeprefix("\ufeff")  # a byte-order mark some editors write
            yield lineno, line.rstrip("\r\n")


def iter_jsonl_raw(path: str | Path) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, parsed_json)`` for each non-blank line, streaming."""
    for lineno, line in iter_text_lines(path):
        if not line.strip():
            continue
        yield lineno, loads_json(line, where(path, lineno), line_numbers=False)


def read_jsonl(path: str | Path, model: type[M], *, allow_empty: bool = False) -> Iterator[M]:
    """Stream records of ``model`` from a JSONL file; raise :class:`UserError` on the first bad one."""
    n = 0
    for lineno, obj in iter_jsonl_raw(path):
        try:
            yield model.model_validate(obj)
        except ValidationError as e:
            raise UserError(format_validation_error(path, lineno, e)) from None
        n += 1
    if n == 0 and not allow_empty:
        raise UserError(f"{path}: empty file, expected JSONL records")


def read_json(path: str | Path) -> Any:
    """Read a whole JSON document with errors that name the file (use for small JSON files only)."""
    p = Path(path)
    data = read_bounded(p, limit=MAX_DOCUMENT_BYTES, what="JSON document")
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        raise UserError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if not text.strip():
        raise UserError(f"{p}: empty file, expected JSON")
    return loads_json(text, str(p))


def dumps(obj: Any) -> str:
    """Compact, stable JSON for one record (pydantic models are dumped without None-valued noise)."""
    if isinstance(obj, BaseModel):
        obj = obj.model_dump(mode="json", exclude_none=True)
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _nearest_existing(p: Path) -> Path:
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _inside(a: Path, b: Path) -> bool:
    """``a`` is ``b`` or lies under it."""
    return a == b or b in a.parents


# Longest file name most file systems take (bytes); longer names are hashed by the writers.
MAX_NAME_BYTES = 255


def check_paths(
    *,
    inputs: Iterable[str | Path | None] = (),
    files: Iterable[str | Path | None] = (),
    folders: Iterable[str | Path | None] = (),
) -> None:
    """Check inputs and outputs before any work starts: the one output-path check of every command.

    ``inputs`` must exist; ``files`` are output files and ``folders`` output folders. Besides
    ``inputs``, every existing path the command's options and config name counts as an input
    (:mod:`sage_dialog.core.outputs`). An output must not be an input, lie inside one or hold one
    (that would destroy it); must not be a device, FIFO or socket; must not be a folder where a file
    is expected or a file where a folder is expected; an existing folder must be empty, sage-dialog's
    own earlier output, or ``--force`` given; and its nearest existing parent must be a folder we can
    create files in (probed by creating and removing a temporary file, which also catches a read-only
    file system for root). Every problem found is reported at once, as a :class:`UserError`.
    """
    from sage_dialog.core import outputs as out_rule

    problems: list[str] = []
    ins = [Path(p) for p in inputs if p is not None]
    for i in ins:
        if not i.exists():
            problems.append(f"{i}: no such file or folder")
    outs = [(Path(p), "file") for p in files if p is not None]
    outs += [(Path(p), "folder") for p in folders if p is not None]
    ins += [p for p in out_rule.named_inputs() if p not in ins]  # what options and configs name
    state = out_rule.named_state()
    probed: dict[Path, str | None] = {}
    for o, kind in outs:
        ro = o.resolve()
        clash = _overlap(o, ro, kind, ins, state)
        if clash:
            problems.append(clash)
            continue
        special = out_rule.special_kind(o)
        if special is not None:
            problems.append(f"{o}: is {special}, not a regular {kind}; refusing to write to it")
            continue
        if kind == "file" and o.is_dir():
            problems.append(f"{o}: is a folder, expected an output file")
            continue
        if kind == "folder" and o.exists() and not o.is_dir():
            problems.append(f"{o}: is a file, expected an output folder")
            continue
        if (kind == "folder" and o.is_dir() and not out_rule.force() and not out_rule.is_blank(o)
                and not out_rule.is_own(o)):
            problems.append(f"{o}: folder exists and was not written by sage-dialog; choose a new folder "
                            "or pass --force (only the files this command writes are replaced)")
            continue
        if len(o.name.encode("utf-8")) > MAX_NAME_BYTES:
            problems.append(f"{o}: file name longer than {MAX_NAME_BYTES} bytes")
            continue
        base = _nearest_existing(ro.parent if kind == "file" else ro)
        if not base.is_dir():
            problems.append(f"{o}: cannot be created: {base} is a file, not a folder")
            continue
        if base not in probed:
            try:
                fd, tmp = tempfile.mkstemp(prefix=".sage-write-check.", dir=base)
                os.close(fd)
                os.unlink(tmp)
                probed[base] = None
            except OSError as e:
                probed[base] = e.strerror or str(e)
        if probed[base] is not None:
            problems.append(f"{o}: cannot write here ({base}: {probed[base]})")
    if problems:
        raise UserError(problems)
    for o, kind in outs:
        if kind == "folder":
            out_rule.note_output_folder(o)


def _overlap(o: Path, ro: Path, kind: str, ins: list[Path], state: set[Path]) -> str | None:
    """The problem when output ``o`` (resolved ``ro``) is an input, lies inside one or holds one
    (a cache in ``state`` may lie inside an output folder: nothing the command writes replaces it)."""
    for i in ins:
        ri = i.resolve()
        if _inside(ro, ri):
            return f"{o}: output would overwrite the input {i}; choose another output path"
        # a folder output holds the input (an input symlink counts by where it points, and by itself)
        if kind == "folder" and i not in state and (_inside(ri, ro) or _inside(i.absolute(), o.absolute())):
            return f"{o}: output folder holds the input {i}; choose another output path"
    return None


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Write ``path`` through a temporary sibling that is renamed into place only on success.

    A symlink is written through (its target is replaced; the link stays, as with ``cp``/``sort -o``).
    """
    p = Path(path)
    if p.is_symlink():
        p = p.resolve()
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        kwargs: dict[str, Any] = {} if "b" in mode else {"encoding": "utf-8", "newline": ""}
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_jsonl(path: str | Path, records: Iterable[Any]) -> int:
    """Atomically write records (models or plain objects) one per line; return how many."""
    n = 0
    with atomic_write(path) as fh:
        for r in records:
            fh.write(dumps(r) + "\n")
            n += 1
    return n


def write_json(path: str | Path, obj: Any, *, indent: int | None = 2) -> None:
    """Atomically write one JSON document."""
    if isinstance(obj, BaseModel):
        obj = obj.model_dump(mode="json", exclude_none=True)
    with atomic_write(path) as fh:
        json.dump(obj, fh, ensure_ascii=False, indent=indent)
        fh.write("\n")


_KEPT: dict[str, str] = {}


def note_kept(path: str | Path, what: str) -> None:
    """Note that ``path`` keeps finished work for resuming (said when a command is interrupted)."""
    _KEPT[str(path)] = what


def kept_for_resume() -> list[str]:
    """``PATH: what`` for every noted path that still exists, in the order noted."""
    return [f"{p}: {what}" for p, what in _KEPT.items() if Path(p).exists()]


def clear_kept() -> None:
    _KEPT.clear()


class JsonlJournal:
    """Append-only JSONL for resumable stages: whole lines only, a torn last line is ignored.

    ``load()`` returns the records written so far (and truncates a torn tail so appends stay
    line-aligned); ``append()`` writes and flushes one record at a time.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fh: IO[str] | None = None

    def load(self) -> list[Any]:
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        good_end = data.rfind(b"\n") + 1
        if good_end < len(data):
            with self.path.open("r+b") as fh:
                fh.truncate(good_end)
        out = []
        for line in data[:good_end].decode("utf-8").splitlines():
            if line.strip():
                out.append(json.loads(line))
        return out

    def append(self, record: Any) -> None:
        if self._fh is None:
            from sage_dialog.core.outputs import claim

            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("a", encoding="utf-8")
            claim(self.path)  # resumable work is kept here: the output folder is ours from now on
            note_kept(self.path, "journal of finished steps, read back when the same command runs again")
        self._fh.write(dumps(record) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> JsonlJournal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# hashing and manifests


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_path(path: str | Path) -> str:
    """Content hash of a file, or of a folder (relative names and contents, sorted)."""
    p = Path(path)
    if p.is_file():
        return sha256_file(p)
    h = hashlib.sha256()
    for f in sorted(x for x in p.rglob("*") if x.is_file()):
        h.update(str(f.relative_to(p)).encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()


def stable_hash(obj: Any) -> str:
    """sha256 of the canonical JSON of ``obj``."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def package_versions(names: Iterable[str] = ("sage-dialog", "torch", "transformers", "trl", "peft", "vllm")) -> dict[str, str]:
    out = {}
    for n in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[n] = metadata.version(n)
    return out


def git_revision(cwd: str | Path | None = None) -> str | None:
    try:
        res = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout.strip() or None


def new_manifest(stage: str, config: dict[str, Any], *, seed: int | None = None, inputs: dict[str, str] | None = None) -> Manifest:
    """A manifest for a stage about to run (call :func:`finish_manifest` when it is done).

    The stored config has its secrets masked (:mod:`sage_dialog.core.redact`: a key, a password in
    a base URL); the hash is of the config as given.
    """
    from sage_dialog.core.redact import redact_obj

    return Manifest(
        stage=stage,
        config=redact_obj(config),
        config_hash=stable_hash(config),
        inputs=inputs or {},
        versions=package_versions(),
        git_revision=git_revision(Path(__file__).parent),
        seed=seed,
    )


def finish_manifest(manifest: Manifest, out_dir: str | Path, **fields: Any) -> Path:
    """Stamp the finish time and write ``manifest.json`` into ``out_dir`` atomically."""
    manifest.finished = utc_now()
    for k, val in fields.items():
        setattr(manifest, k, val)
    path = Path(out_dir) / "manifest.json"
    write_json(path, manifest)
    return path

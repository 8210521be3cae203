"""What a command may replace: the output rule shared by every command that writes.

The rule (docs/design/conventions.md, "Outputs"):

* Every path an option or a config names (input files, mock scripts, label files, prompts,
  personas, caches, adapters, model folders, raw files) is an input. An output that is an input,
  lies inside one, or holds one is refused (:func:`sage_dialog.core.io.check_paths` does the
  checking; this module collects the paths, :func:`note_named`).
* A device, FIFO or socket is never an output (:func:`special_kind`).
* An existing folder is written into only when sage-dialog wrote it (a marker file, or a stage
  manifest, says so), when it is empty, or with ``--force``; even then only the files the command
  writes are replaced (:func:`commit_folder`), nothing else in the folder is touched.
* Files and folders are written to a temporary sibling and renamed into place.

State is per command (the CLI calls :func:`reset` before each one), so the Python API that never
goes through the CLI keeps the plain checks of ``check_paths``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

# the marker sage-dialog leaves in every output folder it made: which command, which files
MARKER = ".sage-dialog-output.json"
# entries of an output folder that do not make it someone else's: our marker and our log folder
_OURS_ALWAYS = {MARKER, "logs"}
# option / config keys whose values are outputs, not inputs
# option / config keys whose values are state kept across runs (a response cache), see named_state
_STATE_KEYS = {"cache"}
# the main inputs, which each command passes to check_paths itself, sometimes narrowed (``trees RUN``
# reads RUN/trees/, so RUN/trees.html beside them is a fine output): not noted again, broader
_EXPLICIT_KEYS = {"input", "path", "source", "seeds", "adapter_dir", "a", "b", "file", "judgements", "contexts"}
_OUTPUT_KEYS = {"out", "output", "output_dir", "run_dir", "html", "best_paths", "rejects", "summary", "prefs"}

_state: dict[str, Any] = {"force": False, "command": None}
_named: list[tuple[str, Path]] = []   # (how it was named, path) of every existing path an option names
_folders: dict[Path, bool] = {}       # output folders checked -> whether we may mark them as ours afterwards


def reset(command: str | None = None, *, force: bool = False) -> None:
    """Forget the paths of an earlier command (the CLI calls this before each command)."""
    _state.update(force=force, command=command)
    _named.clear()
    _folders.clear()


def force() -> bool:
    """Whether ``--force`` was given: existing outputs not written by sage-dialog may be written into."""
    return bool(_state["force"])


def _is_output_key(key: str) -> bool:
    return key in _OUTPUT_KEYS or key.endswith(("_out", "_output"))


def _candidates(text: str) -> Iterator[str]:
    """The path-like parts of one option value: itself, what follows ``KEY=`` and ``provider:``."""
    yield text
    key, sep, rest = text.partition("=")
    if sep and rest and "/" not in key and not _is_output_key(key.strip().split(".")[-1]):  # run_dir=OUT is no input
        yield from _candidates(rest)
    prov, sep, rest = text.partition(":")
    if sep and rest and "://" not in text and "/" not in prov:
        yield from _candidates(rest)


def note_named(value: Any, *, key: str | None = None, source: str = "") -> None:
    """Note every existing path that ``value`` names (walking lists, dicts and models) as an input.

    Values under an output key (``output``, ``out``, ``run_dir``, ``*_out``...) are skipped; a
    compound value such as ``mock:FILE`` or ``user.emotion=FILE`` counts by its path part.
    """
    if key is not None and (_is_output_key(key) or key in _EXPLICIT_KEYS):
        return
    if isinstance(value, BaseModel):
        value = value.model_dump()
    if isinstance(value, dict):
        for k, v in value.items():
            note_named(v, key=str(k), source=str(k) if str(k) in _STATE_KEYS else source or str(k))
    elif isinstance(value, list | tuple):
        for v in value:
            note_named(v, key=key, source=source)
    elif isinstance(value, str | os.PathLike):
        text = os.fspath(value)
        if not isinstance(text, str) or not text or len(text) > 4096 or "\n" in text or "\0" in text:
            return
        for c in dict.fromkeys(_candidates(text)):
            with contextlib.suppress(OSError, ValueError):
                if os.path.lexists(c):
                    _named.append((source or key or "option", Path(c)))


def named_inputs() -> list[Path]:
    """Existing paths named by the command's options and config, in the order noted, without repeats."""
    return list(dict.fromkeys(p for _, p in _named))


def named_state() -> set[Path]:
    """Named paths that are state the command keeps updating (a response cache): one may live inside
    an output folder (a run keeps its cache there), but no output may be one."""
    return {p for how, p in _named if how in _STATE_KEYS}


def special_kind(path: Path) -> str | None:
    """``"a FIFO"`` / ``"a character device"`` ... when ``path`` (followed) is no regular file or folder."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    for test, name in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return None


def is_blank(folder: Path) -> bool:
    """Nothing in ``folder`` but what sage-dialog puts in every output folder (its marker, logs/)."""
    try:
        return all(e.name in _OURS_ALWAYS for e in os.scandir(folder))
    except OSError:
        return False


def _manifest_of_ours(path: Path) -> dict[str, Any] | None:
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and "stage" in data and "config_hash" in data:
            return data
    return None


def is_own(folder: Path) -> bool:
    """Whether sage-dialog wrote ``folder``: it holds our marker, a stage manifest, or is a run folder
    whose stage folders hold manifests."""
    if (folder / MARKER).is_file() or _manifest_of_ours(folder / "manifest.json") is not None:
        return True
    with contextlib.suppress(OSError):
        return any(e.is_dir() and _manifest_of_ours(Path(e.path) / "manifest.json") is not None
                   for e in os.scandir(folder))
    return False


def note_output_folder(folder: Path) -> None:
    """Remember an output folder that passed the check; :func:`mark_folders` marks it when done."""
    existed = folder.exists()
    _folders[folder] = not existed or is_blank(folder) or is_own(folder)


def claim(path: Path) -> None:
    """Mark the output folder holding ``path`` as ours now, not only when the command ends: called
    when resumable work is first kept there (a journal line, a training checkpoint), so a run killed
    outright (SIGKILL, power loss) may still be resumed into that folder."""
    p = Path(path).absolute()
    for folder, ours in _folders.items():
        f = folder.absolute()
        if ours and (p == f or f in p.parents) and f.is_dir() and not (f / MARKER).exists():
            with contextlib.suppress(OSError):
                _write_marker(f, None)


def mark_folders() -> None:
    """After a command: leave the marker in each output folder it made or already owned (so the
    same command may write there again) and that now holds something."""
    for folder, ours in list(_folders.items()):
        if not ours or (folder / MARKER).exists() or not folder.is_dir() or is_blank(folder):
            continue
        with contextlib.suppress(OSError):
            _write_marker(folder, None)
    _folders.clear()


def _write_marker(folder: Path, files: list[str] | None, writer: str | None = None) -> None:
    data: dict[str, Any] = {"written_by": "sage-dialog", "command": _state["command"]}
    if writer is not None:
        data["writer"] = writer
    if files is not None:
        data["files"] = files
    (folder / MARKER).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def _safe_rel(rel: object, root: Path) -> Path | None:
    """``root/rel`` when ``rel`` is a plain relative name that stays inside ``root``."""
    if not isinstance(rel, str) or not rel or os.path.isabs(rel) or ".." in Path(rel).parts:
        return None
    return root / rel


def written_before(folder: Path, writer: str) -> list[Path]:
    """The files ``writer`` (``export``, a stage's name...) wrote into ``folder`` last time: its
    marker's list, else (a folder from before markers) its stage manifest's; none when the folder
    holds another command's output."""
    names: Iterable[object] = ()
    marker: Any = None
    with contextlib.suppress(OSError, ValueError):
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    if isinstance(marker, dict) and "files" in marker:
        names = marker["files"] if marker.get("writer") == writer and isinstance(marker["files"], list) else ()
    else:
        manifest = _manifest_of_ours(folder / "manifest.json")
        if manifest is not None and manifest.get("stage") == writer and isinstance(manifest.get("outputs"), list):
            names = [*manifest["outputs"], "manifest.json"]
    out = [_safe_rel(n, folder) for n in names]
    return [p for p in out if p is not None]


def commit_folder(tmp: Path, dst: Path, writer: str) -> None:
    """Move the finished folder ``tmp`` to ``dst``; ``writer`` names what wrote it (``export``...).

    A missing or empty ``dst`` is replaced by renaming. Otherwise (``dst`` is sage-dialog's earlier
    result, or ``--force`` was given, which :func:`check_paths` checked) only the files the same
    writer wrote there before are removed and the new files moved in one by one (each rename
    atomic); anything else in ``dst`` stays as it was.
    """
    if dst.is_symlink():  # written through: the link stays, its target folder gets the files
        dst = dst.resolve()
    files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file() or p.is_symlink())
    files = [f for f in files if f != MARKER]
    _write_marker(tmp, files, writer)
    if not dst.exists():
        os.replace(tmp, dst)
        return
    if dst.is_dir() and not any(os.scandir(dst)):
        dst.rmdir()
        os.replace(tmp, dst)
        return
    ours = is_own(dst) or is_blank(dst)  # else --force: nothing of dst's is removed, and it stays unmarked
    new = set(files)
    for old in written_before(dst, writer) if ours else []:
        rel = str(old.relative_to(dst))
        if rel not in new and (old.is_file() or old.is_symlink()):
            old.unlink()
            _prune_empty(old.parent, dst)
    for rel in files:
        target = dst / rel
        if target.is_dir() and not target.is_symlink():
            raise IsADirectoryError(21, "is a folder where this command writes a file", str(target))
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp / rel, target)
    if ours:
        os.replace(tmp / MARKER, dst / MARKER)
    shutil.rmtree(tmp, ignore_errors=True)


def _prune_empty(folder: Path, root: Path) -> None:
    """Remove folders left empty by removing our own files, up to (not including) ``root``."""
    while folder != root and root in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent

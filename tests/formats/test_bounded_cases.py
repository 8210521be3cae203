"""Hostile input with bounded memory and time: each case in bad_inputs/bounded/ through the real CLI.

The same case files as ``bad_inputs/commands/`` (see bad_inputs/README.md), but every command line
runs in its own process, ``python -m sage_dialog``, with an address-space cap (``memory_mb``,
``RLIMIT_AS``; default 1024) and a wall-clock limit (``timeout_s``; default 60): a reader that grows
without bound fails with MemoryError or is killed, one that never ends fails the timeout, instead
of taking the machine with it. Extra keys:

* ``folders``: empty folders to make; ``files``: ``{fifo: null}`` makes a named pipe nobody writes to, ``{fifo: TEXT}`` one that a
  thread writes TEXT into (as ``<(zcat file)`` does); ``symlinks: {NAME: TARGET}``;
* ``disk_full: true``: ``{full}`` is a 64 KiB tmpfs (mounted where root may mount; otherwise a
  plain folder, and the command runs under ``RLIMIT_FSIZE`` = 64 KiB, which Python reports as
  ``EFBIG``); the exact line then differs, so such cases use ``stderr_has``;
* per run: ``signal_after_s`` and ``signal`` (``SIGTERM``, ``SIGINT``) to interrupt it.

As in test_command_cases.py: exit code, the exact ``error:`` lines, no traceback, and for every
failing run nothing the case made changed and nothing new appeared (``may_create`` aside).
"""

from __future__ import annotations

import os
import resource
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

CASES_DIR = Path(__file__).parent / "bad_inputs" / "bounded"
CASES = sorted(p.stem for p in CASES_DIR.glob("*.yaml"))
SRC = str(Path(__file__).resolve().parents[2] / "src")
FULL_BYTES = 64 * 1024


def _snapshot(root: Path) -> dict[str, bytes]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink() and stat.S_ISREG(p.stat().st_mode):
            out[str(p.relative_to(root))] = p.read_bytes()
        elif p.is_symlink() or not p.is_dir():
            out[str(p.relative_to(root))] = b"<special>"
    return out


def _subst(value: str, env: dict[str, str]) -> str:
    for k, v in env.items():
        value = value.replace("{" + k + "}", v)
    return value


def _read_only_dir(tmp: Path) -> Path | None:
    ro = tmp / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        (ro / "probe").write_text("x")
    except OSError:
        return ro
    (ro / "probe").unlink()
    try:
        Path("/sys/kernel/sage-dialog-probe").mkdir()
    except OSError:
        return Path("/sys/kernel/sage-dialog-ro")  # as root: sysfs refuses new files
    return None


def _mount_tmpfs(folder: Path) -> bool:
    folder.mkdir()
    if os.geteuid() != 0:
        return False
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={FULL_BYTES}", "tmpfs", str(folder)],
                         capture_output=True, timeout=20, check=False)
    return res.returncode == 0


def _make_files(case: dict[str, Any], root: Path, env: dict[str, str]) -> dict[Path, str]:
    """Create the case's files; return the FIFOs that want a writer (path -> text)."""
    writers: dict[Path, str] = {}
    for name, content in (case.get("files") or {}).items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, dict) and "fifo" in content:
            os.mkfifo(p)
            if content["fifo"] is not None:
                writers[p] = _subst(content["fifo"], env)
        elif isinstance(content, dict) and "python" in content:  # big or binary inputs, built by an expression
            data = eval(content["python"], {})
            p.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
        else:
            p.write_text(_subst(content, env), encoding="utf-8")
    for d in case.get("folders") or []:
        (root / d).mkdir(parents=True, exist_ok=True)
    for name, target in (case.get("symlinks") or {}).items():
        (root / name).symlink_to(_subst(target, env))
    return writers


def _limits(memory_mb: int, fsize: int | None) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb * 2**20, memory_mb * 2**20))
        if fsize is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    return apply


def _feed(path: Path, text: str) -> threading.Thread:
    def write() -> None:
        with path.open("w", encoding="utf-8") as fh:  # blocks until the command opens it
            fh.write(text)
    t = threading.Thread(target=write, daemon=True)
    t.start()
    return t


def test_cases_exist() -> None:
    assert len(CASES) >= 15


@pytest.mark.parametrize("name", CASES)
def test_bounded_case(name: str, tmp_path: Path) -> None:
    case = yaml.safe_load((CASES_DIR / f"{name}.yaml").read_text(encoding="utf-8"))
    root = tmp_path / "case"
    root.mkdir()
    env = {"dir": str(root)}
    mounted = False
    fsize = None
    if case.get("read_only"):
        ro = _read_only_dir(tmp_path)
        if ro is None:
            pytest.skip("no read-only folder available on this machine")
        env["ro"] = str(ro)
    if case.get("disk_full"):
        full = root / "full"
        mounted = _mount_tmpfs(full)
        fsize = None if mounted else FULL_BYTES
        env["full"] = str(full)
    try:
        writers = _make_files(case, root, env)
        proc_env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
                    "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        for run in case["runs"]:
            _one_run(case, run, root, env, proc_env, writers, fsize)
    finally:
        if mounted:
            subprocess.run(["umount", "-l", env["full"]], capture_output=True, timeout=20, check=False)


def _one_run(case: dict[str, Any], run: dict[str, Any], root: Path, env: dict[str, str],
             proc_env: dict[str, str], writers: dict[Path, str], fsize: int | None) -> None:
    before = _snapshot(root)
    argv = [_subst(str(a), env) for a in run["argv"]]
    timeout = float(case.get("timeout_s", 60))
    feeders = [_feed(p, text) for p, text in writers.items()]
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "sage_dialog", *argv], cwd=root, env=proc_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_limits(int(case.get("memory_mb", 1024)), fsize))
    if "signal_after_s" in run:
        try:
            proc.wait(timeout=float(run["signal_after_s"]))
        except subprocess.TimeoutExpired:
            proc.send_signal(getattr(signal, run.get("signal", "SIGTERM")))
    try:
        out, err = proc.communicate(timeout=max(1.0, timeout - (time.monotonic() - t0)))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"{argv}: still running after {timeout:g} s")
    for t in feeders:
        t.join(timeout=5)
    code = proc.returncode
    assert "Traceback" not in err, err
    assert "MemoryError" not in err, err
    assert code == run["exit"], f"{argv}: exit {code}\n{err}"
    want = [_subst(line, env) for line in run.get("stderr", [])]
    got = [line for line in err.splitlines() if line.startswith("error: ")]
    if "stderr" in run:
        assert got == want, "\n".join(got)
    for part in run.get("stderr_has", []):
        assert _subst(part, env) in err, err
    for part in run.get("stdout_has", []):
        assert _subst(part, env) in out, out
    if code != 0:
        after = _snapshot(root)
        changed = [k for k in before if after.get(k) != before[k]]
        assert not changed, f"clobbered: {changed}"
        allowed = set(run.get("may_create", []))
        new = [k for k in after if k not in before and k not in allowed]
        assert not new, f"partial output left behind: {new}"
    for p in run.get("absent", []):
        assert not os.path.exists(_subst(p, env)), p

"""Hostile input to every command: each case in bad_inputs/commands/ gives its required outcome.

A case is a YAML file (see bad_inputs/README.md): files to create in a fresh folder, one or more
command lines run through the real CLI, and for each the exit code and the exact error lines. For
every run that fails, nothing the case created may change (nothing clobbered) and no new file may
appear (nothing partial), unless the case lists it under ``may_create``.
"""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from sage_dialog.cli import main

CASES_DIR = Path(__file__).parent / "bad_inputs" / "commands"
CASES = sorted(p.stem for p in CASES_DIR.glob("*.yaml"))


def _read_only_dir(tmp: Path) -> Path | None:
    """A folder nobody can create files in: chmod 555 (non-root), else a folder on sysfs (root)."""
    ro = tmp / "ro"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    try:
        (ro / "probe").write_text("x")
    except OSError:
        return ro
    (ro / "probe").unlink()
    sysfs = Path("/sys/kernel")
    try:
        (sysfs / "sage-dialog-probe").mkdir()
    except OSError:
        return sysfs / "sage-dialog-ro"  # as root: sysfs refuses new folders and files
    return None


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _subst(value: str, env: dict[str, str]) -> str:
    for k, v in env.items():
        value = value.replace("{" + k + "}", v)
    return value


def _make_files(case: dict[str, Any], root: Path, env: dict[str, str]) -> None:
    for name, content in (case.get("files") or {}).items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, dict) and "python" in content:  # big or binary inputs, built by an expression
            data = eval(content["python"], {})
            p.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
        else:
            p.write_text(_subst(content, env), encoding="utf-8")
    for d in case.get("folders") or []:
        (root / d).mkdir(parents=True, exist_ok=True)
    for name, target in (case.get("links") or {}).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).symlink_to(target)
    for name, kind in (case.get("specials") or {}).items():
        _make_special(root / name, kind)


def _make_special(p: Path, kind: str) -> None:
    """A FIFO, a socket, or a private copy of a device (``null``, ``full``; needs root: else skip)."""
    if kind == "fifo":
        os.mkfifo(p)
    elif kind == "socket":
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(str(p))  # the socket file stays after close
    else:
        minor = {"null": 3, "full": 7}[kind]
        try:
            os.mknod(p, stat.S_IFCHR | 0o666, os.makedev(1, minor))
        except PermissionError:
            pytest.skip("making a device file needs root")


def test_cases_exist() -> None:
    assert len(CASES) >= 25


@pytest.mark.parametrize("name", CASES)
def test_command_case(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                      monkeypatch: pytest.MonkeyPatch) -> None:
    case = yaml.safe_load((CASES_DIR / f"{name}.yaml").read_text(encoding="utf-8"))
    root = tmp_path / "case"
    root.mkdir()
    env = {"dir": str(root)}
    if case.get("read_only"):
        ro = _read_only_dir(tmp_path)
        if ro is None:
            pytest.skip("no read-only folder available on this machine")
        env["ro"] = str(ro)
    _make_files(case, root, env)
    monkeypatch.chdir(root)
    for k, v in (case.get("env") or {}).items():
        monkeypatch.setenv(k, _subst(str(v), env))
    made = set(_snapshot(root))
    for run in case["runs"]:
        before = _snapshot(root)
        argv = [_subst(str(a), env) for a in run["argv"]]
        code = main(argv)
        out, err = capsys.readouterr()
        assert "Traceback" not in err, err
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
        after = _snapshot(root)
        for p in run.get("kept", []):  # whatever the exit code: files the command did not make stay as they were
            assert after.get(p) == before[p], f"{p} changed"
        for p in run.get("exists", []):
            assert p in after, f"{p} missing"
        for p, parts in (run.get("has") or {}).items():
            for part in parts:
                assert part.encode() in after[p], f"{p} lacks {part}"
        if "secret" in run:  # never written anywhere, nor shown
            secret = run["secret"]
            assert secret not in out + err
            leaked = [k for k, v in after.items() if k not in made and secret.encode() in v]
            assert not leaked, f"secret written to {leaked}"

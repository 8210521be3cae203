"""The central command line: -q/-v/--threads on the commands, a closed pipe, the run's log file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sage_dialog import cli
from sage_dialog.core import console, threads

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("argv", [["convert", "--list"], ["--help"]])
def test_a_closed_pipe_ends_quietly(argv: list[str]) -> None:
    """`sage-dialog convert --list | head -1`: no BrokenPipeError traceback (issue 16, item 6)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "sage_dialog", *argv], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the command writes a byte
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert err == ""


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_command_takes_q_and_v_and_model_commands_take_threads(name: str) -> None:
    parser, _ = cli.build_parser(name)
    opts = parser._option_string_actions
    assert {"-q", "--quiet", "-v", "--verbose"} <= set(opts)
    assert ("--threads" in opts) == (name in cli.MODEL_COMMANDS)


def test_default_threads_count_only_free_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (1.7, 1.0, 1.0))
    assert threads.default_threads() == 1  # a busy 2-core machine: one thread
    monkeypatch.setattr(os, "getloadavg", lambda: (9.0, 1.0, 1.0))
    assert threads.default_threads() == 1  # never below one
    monkeypatch.setattr(os, "getloadavg", lambda: (0.1, 1.0, 1.0))
    assert threads.resolve(None) == 2  # idle: every core
    monkeypatch.setattr(os, "getloadavg", lambda: (0.9, 1.0, 1.0))
    assert threads.default_threads() == 2  # less than one whole core busy: still idle
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.resolve(None) == 3 and threads.resolve(5) == 5  # env, then the flag, beat the default


def test_threads_flag_reaches_torch_and_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    env_before = os.environ.get("OMP_NUM_THREADS")
    seen = {}

    def fake_run(args: object) -> int:
        seen.update(torch=torch.get_num_threads(), omp=os.environ.get("OMP_NUM_THREADS"))
        return 0

    from sage_dialog.commands import export

    monkeypatch.setattr(export, "run", fake_run)
    assert cli.main(["export", str(tmp_path), "-o", str(tmp_path / "m"), "--threads", "1"]) == 0
    assert seen == {"torch": 1, "omp": "1"}
    assert cli.main(["export", str(tmp_path), "-o", str(tmp_path / "m"), "--threads", "0"]) == 2
    assert os.environ.get("OMP_NUM_THREADS") == env_before  # the environment is restored afterwards
    torch.set_num_threads(before)


def test_quiet_turns_progress_lines_off(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from sage_dialog.commands import convert

    seen = []
    monkeypatch.setattr(convert, "run", lambda args: seen.append(os.environ.get("TQDM_DISABLE")) or 0)
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert cli.main(["convert", "a", "b", "-q"]) == 0
    assert cli.main(["convert", "a", "b"]) == 0
    assert seen == ["1", None] and "TQDM_DISABLE" not in os.environ  # restored after the command


def _spec(tmp_path: Path) -> Path:
    data = tmp_path / "d.json"
    data.write_text(json.dumps([{"id": "d1", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hey"}]}]))
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"d.json": {"prompt": "", "size": 1}}))
    return spec


def test_a_failing_stage_names_its_log_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys) -> None:
    import logging

    from sage_dialog.stages import mix

    def broken(*_args: object, **_kwargs: object) -> None:
        logging.getLogger("transformers.modeling_utils").info("library chatter")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(mix, "run", broken)
    out = tmp_path / "mixed"
    assert cli.main(["mix", str(_spec(tmp_path)), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    log = out / "logs" / "mix.log"
    assert f"error: mix failed: RuntimeError: disk on fire\n(details and traceback in {log})" in err
    assert "Traceback" not in err and "library chatter" not in err
    text = log.read_text()
    assert "Traceback" in text and "library chatter" in text and "disk on fire" in text


def test_bad_input_leaves_no_log_folder_and_a_run_keeps_its_log(tmp_path: Path, capsys) -> None:
    out = tmp_path / "mixed"
    assert cli.main(["mix", str(tmp_path / "missing.json"), "-o", str(out)]) == 2
    assert not out.exists()
    assert cli.main(["mix", str(_spec(tmp_path)), "-o", str(out)]) == 0
    assert (out / "logs" / "mix.log").is_file()
    assert console.log_path() is None  # detached after the command


def test_library_logs_go_to_the_file_and_ours_to_the_screen(tmp_path: Path, capsys) -> None:
    import logging

    log = tmp_path / "logs" / "x.log"
    with console.session(console.NORMAL):
        console.open_log(log)
        logging.getLogger("accelerate.utils").warning("library warning")
        logging.getLogger("sage_dialog.stages.x").warning("our warning")
    err = capsys.readouterr().err
    assert "warning: our warning" in err and "library warning" not in err
    assert "library warning" in log.read_text() and "our warning" in log.read_text()


def test_a_backend_or_path_failure_in_a_logged_command_exits_2_with_the_traceback_logged(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys) -> None:
    from sage_dialog.backends.base import BackendError
    from sage_dialog.stages import mix

    def unreachable(*_args: object, **_kwargs: object) -> None:
        raise BackendError("connection", "http://127.0.0.1:9/v1 refused")

    monkeypatch.setattr(mix, "run", unreachable)
    out = tmp_path / "mixed"
    assert cli.main(["mix", str(_spec(tmp_path)), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "model backend failed (connection: http://127.0.0.1:9/v1 refused)" in err and "Traceback" not in err
    assert "Traceback" in (out / "logs" / "mix.log").read_text()

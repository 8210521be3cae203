"""Start a server for a test and wait until it answers: a ``sage-dialog`` command in its own process
(:func:`start_process`), or an ASGI app on uvicorn in a thread of the test process (:func:`serve_app`).

Both wait with a deadline, so a server that never comes up fails the test instead of hanging it,
and both stop the server when the ``with`` block ends.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from tests.support.ports import free_port

# this checkout's src/, first on the PYTHONPATH of every process a test starts
SRC = Path(__file__).resolve().parents[2] / "src"


def src_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment with this checkout's sources first on ``PYTHONPATH``, plus ``extra``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra or {})
    return env


class ServedProcess:
    """A server process started by :func:`start_process`: where it listens and what it printed."""

    def __init__(self, proc: subprocess.Popen[str], port: int):
        self.proc, self.port = proc, port
        self.base = f"http://127.0.0.1:{port}"
        self.log: list[str] = []
        # drain the output as it comes: a full pipe (64 KiB of access log) would block the server
        self._drain = threading.Thread(target=self._read, daemon=True)
        self._drain.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log.append(line)

    def output(self) -> str:
        """Everything the process printed so far (all of it once the process has ended)."""
        if self.proc.poll() is not None:
            self._drain.join(timeout=10)
        return "".join(self.log)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 20 s; returns once the process is gone and its output read."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._drain.join(timeout=10)


def _answers(base: str, ready: str | None, port: int) -> bool:
    if ready is None:  # up once the port takes a connection
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            return False
    try:
        return httpx.get(f"{base}{ready}", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def start_process(
    args: Sequence[str],
    *,
    port: int | None = None,
    env: Mapping[str, str] | None = None,
    ready: str | None = "/health",
    timeout_s: float = 120,
    what: str = "server",
) -> Iterator[ServedProcess]:
    """Run ``python -m sage_dialog ARGS`` (``--port PORT`` appended) and wait until it is up.

    Up means ``GET ready`` answers 200 (``ready=None``: the port takes a TCP connection). A process
    that exits first, or is not up within ``timeout_s``, fails with its output. ``env`` is added to
    :func:`src_env`. The process is stopped when the block ends (unless the test stopped it).
    """
    port = free_port() if port is None else port
    cmd = [sys.executable, "-m", "sage_dialog", *args, "--port", str(port)]
    proc = subprocess.Popen(cmd, env=src_env(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    served = ServedProcess(proc, port)
    try:
        deadline = time.monotonic() + timeout_s
        while not _answers(served.base, ready, port):
            if proc.poll() is not None:
                raise AssertionError(f"{what} exited: {served.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} did not come up in {timeout_s:g} s: {''.join(served.log)}")
            time.sleep(0.3)
        yield served
    finally:
        served.stop()


@contextlib.contextmanager
def serve_app(app: Any, timeout_s: float = 20) -> Iterator[str]:
    """Run the ASGI ``app`` with uvicorn on a free loopback port in a thread; yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)

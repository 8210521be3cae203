"""Annotate and search on a real Ray cluster of two worker nodes on 127.0.0.1 (``ray.cluster_utils``).

The head node has no CPUs and each worker node one, so two actors of one CPU each sit on two
different nodes: units cross node boundaries. The outputs must be byte-identical to the local run
with the same seeds, and a worker killed mid-stage must lose and duplicate nothing.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'sage-dialog[ray]'")

from sage_dialog.core.io import read_jsonl, write_jsonl  # noqa: E402
from sage_dialog.core.schema import Dialog, SearchNode  # noqa: E402
from sage_dialog.roles.sampling import SamplingConfig  # noqa: E402
from sage_dialog.stages import annotate  # noqa: E402
from sage_dialog.stages.engine import EngineSettings, WorkerPool  # noqa: E402
from sage_dialog.stages.search import stage  # noqa: E402
from sage_dialog.stages.search.config import SearchConfig  # noqa: E402

from .helpers import child_env  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]
STORE = 80 * 2**20  # object store per node: the units are a few KB


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    os.environ.update({k: v for k, v in child_env().items() if k in ("PYTHONPATH", "OMP_NUM_THREADS")})
    # the nodes bind this box's own address (Ray picks it; forcing 127.0.0.1 left the GCS on the other one)
    c = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "object_store_memory": STORE, "include_dashboard": False})
    for _ in range(2):
        c.add_node(num_cpus=1, object_store_memory=STORE)
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False)
    yield c
    ray.shutdown()
    c.shutdown()


def _engine(c, **kw) -> EngineSettings:
    return EngineSettings(kind="ray", address=c.address, workers=2, **kw)


class _Probe:
    def where(self) -> str:
        return str(ray.get_runtime_context().get_node_id())


def test_two_workers_sit_on_two_nodes(cluster):
    import sys

    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test file
    pool = WorkerPool(_engine(cluster), _Probe)

    async def main() -> set[str]:
        return set(await asyncio.gather(*(pool.call("where") for _ in range(6))))

    try:
        nodes = asyncio.run(main())
    finally:
        pool.close()
    assert len(nodes) == 2 and cluster.head_node.unique_id not in nodes


def test_annotate_on_ray_writes_what_the_local_run_writes(cluster, tmp_path):
    from sage_dialog.sandbox.corpus import CorpusConfig, generate_corpus

    src = tmp_path / "raw.jsonl"
    write_jsonl(src, generate_corpus(CorpusConfig(n_dialogs=30, seed=3)))
    outs = {}
    for kind, engine in (("local", EngineSettings()), ("ray", _engine(cluster))):
        cfg = annotate.AnnotateConfig(input=src, output=tmp_path / f"{kind}.jsonl", annotator="oracle", chunk_size=4,
                                      engine=engine)
        annotate.run(annotate.Settings.of(cfg), inputs=cfg.inputs(), out=cfg.output)
        outs[kind] = cfg
    assert outs["ray"].output.read_bytes() == outs["local"].output.read_bytes()
    assert outs["ray"].rejects_path().read_bytes() == outs["local"].rejects_path().read_bytes()
    assert len(list(read_jsonl(outs["ray"].output, Dialog))) == 30


SEEDS = ["I failed my driving test again.", "My sister is getting married!", "My dog is sick.",
         "I got a new job today.", "I can't sleep before my exam.", "We moved to a new city."]


def _search_cfg(tmp_path: Path, model: Path, name: str, engine: EngineSettings,
                linger_ms: float | None = None) -> stage.SearchRunConfig:
    seeds = tmp_path / "seeds.txt"
    seeds.write_text("\n".join(SEEDS) + "\n")
    return stage.SearchRunConfig(seeds=seeds, out=tmp_path / name, assistant=f"hf:{model}", user="oracle",
                                 judge="oracle", assistant_persona="none", engine=engine,
                                 # share_prompt off: a shared prefill makes a row's samples depend on which
                                 # requests meet in its micro-batch, and Ray workers batch other requests
                                 backend_options={"num_threads": 1, "share_prompt": False,
                                                  **({"linger_ms": linger_ms} if linger_ms else {})},
                                 config=SearchConfig(turns=2, candidates=3, sampling=SamplingConfig(max_tokens=16)))


def _trees(out: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((out / "trees").glob("seed-*.jsonl"))}


@pytest.fixture(scope="module")
def local_search(tiny_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("search-local")
    stage.run(_search_cfg(tmp, tiny_model, "local", EngineSettings()))
    return tmp / "local"


def test_search_on_ray_gives_the_local_trees(cluster, tiny_model, local_search, tmp_path):
    res = stage.run(_search_cfg(tmp_path, tiny_model, "ray", _engine(cluster)))
    assert res.seeds == len(SEEDS)
    assert _trees(res.out) == _trees(local_search) and len(_trees(local_search)) == len(SEEDS)
    assert (res.out / "best.jsonl").read_bytes() == (local_search / "best.jsonl").read_bytes()


def _worker_pids() -> list[int]:
    """The Ray workers that hold a stage's actors (the nodes are this process's children)."""
    import psutil

    pids = []
    for p in psutil.Process().children(recursive=True):
        try:
            if " ".join(p.cmdline()).startswith("ray::_Worker"):
                pids.append(p.pid)
        except psutil.Error:
            continue
    return pids


def test_a_worker_killed_mid_search_loses_and_duplicates_nothing(cluster, tiny_model, local_search, tmp_path):
    # each micro-batch waits 300 ms for company: the stage lasts seconds, not the blink in which a
    # loaded machine's poller missed it (samples do not depend on batching with share_prompt off)
    cfg = _search_cfg(tmp_path, tiny_model, "killed", _engine(cluster), linger_ms=300)
    journal = cfg.out / "journal"  # type: ignore[operator]
    killed: list[int] = []

    def kill_one_worker_mid_stage() -> None:
        deadline = time.monotonic() + 120
        # once some seed has journaled a call and before all trees exist: one worker is mid-seed
        while time.monotonic() < deadline:
            if journal.is_dir() and any(p.stat().st_size for p in journal.glob("*.jsonl")):
                pids = _worker_pids()
                if pids:
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append(pids[0])
                    return
            time.sleep(0.05)

    t = threading.Thread(target=kill_one_worker_mid_stage)
    t.start()
    res = stage.run(cfg)
    t.join()
    assert killed, "no worker was killed"
    trees = _trees(res.out)
    assert trees == _trees(local_search)  # every seed once, as the local run has it
    for text in trees.values():
        ids = [SearchNode.model_validate_json(line).id for line in text.splitlines()]
        assert len(ids) == len(set(ids))
    assert len((res.out / "best.jsonl").read_text().splitlines()) == len(SEEDS)


def test_missing_ray_names_the_extra(monkeypatch):
    import builtins

    from sage_dialog.core.errors import UserError
    from sage_dialog.stages.engine import import_ray

    real = builtins.__import__

    def no_ray(name, *a, **kw):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(UserError, match=r"pip install 'sage-dialog\[ray\]'"):
        import_ray()

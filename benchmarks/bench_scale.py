"""Benchmark: search throughput against Ray workers on a local cluster, and Ray's cost per work unit.

A real Ray cluster on this machine (``ray.cluster_utils.Cluster``: a head with no CPUs and W worker
nodes of one CPU each), the search stage with ``engine: ray`` on the tiny model (oracle user and
judge), seeds as the units:

1. **local**: the same search in this process (all seeds coalesced into the backend's batches);
2. **ray, W workers** for each W in ``--workers``: wall time of the stage (pool start, model load
   on every worker, the seeds, the driver's final files), and the time of the seeds alone;
3. **overhead per unit**: ``--noop-units`` calls of a worker that does nothing, through the same
   :class:`WorkerPool` (serialisation, scheduling, the round trip), per call.

Then a **projection** (labelled as such) to N workers from the measured costs:
``T(N) = T_start + ceil(S / N) * (c + o)``, S seeds, c the seconds per seed on one worker, o the
per-unit overhead, T_start the pool start.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_scale.py --seeds 16 --workers 1 2 --concurrency 1 4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")

SEEDS = ["I failed my driving test again.", "My sister is getting married!", "My dog is sick.",
         "I got a new job today.", "I can't sleep before my exam.", "We moved to a new city.",
         "My friend forgot my birthday.", "I finally finished my project.", "I lost my wallet.",
         "My team won the game!", "I am nervous about the interview.", "My cat knocked over my coffee."]


class Noop:
    def unit(self, x: int) -> int:
        return x


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=16)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--turns", type=int, default=2)
    ap.add_argument("--candidates", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=24)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4], help="units per worker at once")
    ap.add_argument("--noop-units", type=int, default=200)
    ap.add_argument("--project", type=int, nargs="+", default=[1, 2, 8, 16, 64])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    import ray
    from ray.cluster_utils import Cluster

    from sage_dialog.roles.sampling import SamplingConfig
    from sage_dialog.sandbox.tiny_model import build_tiny_model
    from sage_dialog.stages.engine import EngineSettings, WorkerPool
    from sage_dialog.stages.search import stage
    from sage_dialog.stages.search.config import SearchConfig

    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    model = build_tiny_model(tmp / "tiny")
    seeds_file = tmp / "seeds.txt"
    seeds = [SEEDS[i % len(SEEDS)] + ("" if i < len(SEEDS) else f" ({i})") for i in range(args.seeds)]
    seeds_file.write_text("\n".join(seeds) + "\n")

    def cfg(name: str, engine: EngineSettings) -> stage.SearchRunConfig:
        return stage.SearchRunConfig(
            seeds=seeds_file, out=tmp / name, assistant=f"hf:{model}", user="oracle", judge="oracle",
            assistant_persona="none", engine=engine, backend_options={"num_threads": 1},
            config=SearchConfig(turns=args.turns, candidates=args.candidates,
                                sampling=SamplingConfig(max_tokens=args.max_tokens)))

    results: dict = {"seeds": args.seeds, "turns": args.turns, "candidates": args.candidates,
                     "max_tokens": args.max_tokens, "load_before": os.getloadavg()}
    t0 = time.perf_counter()
    stage.run(cfg("local", EngineSettings()))
    results["local_s"] = round(time.perf_counter() - t0, 2)
    print(f"local (in-process): {results['local_s']} s", flush=True)

    store = 80 * 2**20
    runs = []
    for w, conc in [(w, k) for w in args.workers for k in args.concurrency]:
        c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": store,
                                                          "include_dashboard": False})
        for _ in range(w):
            c.add_node(num_cpus=1, object_store_memory=store)
        c.wait_for_nodes()
        ray.init(address=c.address, log_to_driver=False)
        engine = EngineSettings(kind="ray", workers=w, concurrency=conc)
        # the pool start alone: actors placed and the model loaded on every worker
        t = time.perf_counter()
        pool = WorkerPool(engine, Noop)
        n = args.noop_units

        async def noop(p: WorkerPool = pool, n: int = n) -> None:
            await asyncio.gather(*(p.call("unit", i) for i in range(n)))

        asyncio.run(noop(pool, w))
        pool_start = time.perf_counter() - t

        t = time.perf_counter()
        asyncio.run(noop())
        overhead = (time.perf_counter() - t) / n * w  # each worker takes every w-th unit
        pool.close()
        t = time.perf_counter()
        stage.run(cfg(f"ray-{w}-{conc}", engine))
        wall = time.perf_counter() - t
        same = all((tmp / f"ray-{w}-{conc}" / "trees" / p.name).read_text() == p.read_text()
                   for p in (tmp / "local" / "trees").glob("seed-*.jsonl"))
        runs.append({"workers": w, "concurrency": conc, "stage_s": round(wall, 2), "noop_pool_start_s": round(pool_start, 2),
                     "overhead_per_unit_ms": round(overhead * 1000, 2), "trees_identical_to_local": same})
        print(runs[-1], flush=True)
        ray.shutdown()
        c.shutdown()
    results["ray"] = runs
    # per-seed cost on one worker: the 1-worker stage minus a worker's start (model load) is measured
    # separately by the 1-worker run against the local run: c = local seconds per seed (upper bound)
    one = next((r for r in runs if r["workers"] == 1 and r["concurrency"] == 1), runs[0])
    c_seed = results["local_s"] / args.seeds
    o = one["overhead_per_unit_ms"] / 1000
    t_start = max(one["stage_s"] - args.seeds * (c_seed + o), 0.0)
    results["projection"] = {
        "label": "PROJECTION from measured per-unit costs, not a measurement",
        "seconds_per_seed": round(c_seed, 3), "overhead_per_unit_s": round(o, 4), "start_s": round(t_start, 2),
        "seeds_1000": {str(n): round(t_start + math.ceil(1000 / n) * (c_seed + o), 1) for n in args.project}}
    results["load_after"] = os.getloadavg()
    print(json.dumps(results, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

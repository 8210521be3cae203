"""Benchmark: pairwise judging throughput (batched vs one request at a time) and statistics cost.

1. **judging**: ``compare.judge_all`` with an LLM judge (tiny random-weight model, in-process HF
   backend, generate + option scoring) over every pair of dialogs of 2 models x N seeds x 2 orders,
   handing the backend chunks of 64 tasks (what ``compare`` does) vs one task at a time.
2. **statistics**: ``report.build_report`` (win rates with 2000 bootstrap resamples, consensus, judge
   consistency, length-controlled regression with bootstrap, Bradley-Terry with bootstrap) on a
   synthetic set of verdicts: 4 models, 500 seeds, 2 judges, both orders (12,000 verdicts).

Medians of --repeats runs; the machine is shared, so read the ratio more than the absolute numbers.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_compare.py --seeds 32 --repeats 3
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _dialogs(n: int, model: str, rng: random.Random):
    from sage_dialog.core.schema import Dialog, Turn

    words = "sorry hear that hard day want talk about it maybe walk helps friends family rest".split()
    return [Dialog(id=f"{model}{i}", meta={"seed": f"seed {i}: I had a rough day at work"},
                   turns=[Turn(role="user", text=f"seed {i}: I had a rough day at work"),
                          Turn(role="assistant", text=" ".join(rng.choices(words, k=rng.randint(8, 30)))),
                          Turn(role="user", text="Yes, it was long."),
                          Turn(role="assistant", text=" ".join(rng.choices(words, k=rng.randint(8, 30))))])
            for i in range(n)]


def bench_judging(seeds: int, repeats: int) -> dict[str, float]:
    from sage_dialog.backends import load_backend
    from sage_dialog.roles.pairwise_judge import LLMPairwiseJudge
    from sage_dialog.sandbox.tiny_model import build_tiny_model
    from sage_dialog.stages.compare.compare import align_seeds, dialog_tasks, judge_all

    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_model(Path(tmp) / "tiny")
        backend = load_backend(f"hf:{model}")
        dialogs = {"m1": _dialogs(seeds, "m1", rng), "m2": _dialogs(seeds, "m2", rng)}
        order, by_model = align_seeds(dialogs)
        tasks = dialog_tasks(list(dialogs), order, by_model)
        judge = LLMPairwiseJudge(backend)
        out: dict[str, float] = {"tasks": len(tasks)}
        times: dict[str, list[float]] = {"batched": [], "chunks_of_16": [], "one_at_a_time": []}
        asyncio.run(judge_all([judge], tasks[:4], Path(tmp) / "warmup.jsonl", chunk=4, progress=False))
        for r in range(repeats):  # interleaved, so that load changes on the shared machine hit both alike
            for label, chunk in (("batched", 64), ("chunks_of_16", 16), ("one_at_a_time", 1)):
                t0 = time.perf_counter()
                asyncio.run(judge_all([judge], tasks, Path(tmp) / f"j-{label}-{r}.jsonl", chunk=chunk, progress=False))
                times[label].append(time.perf_counter() - t0)
        for label, ts in times.items():
            out[f"{label}_s"] = statistics.median(ts)
            out[f"{label}_verdicts_per_s"] = len(tasks) / statistics.median(ts)
        return out


def bench_stats(repeats: int) -> dict[str, float]:
    from sage_dialog.core.schema import Verdict
    from sage_dialog.stages.compare.report import build_report

    rng = random.Random(0)
    strength = {"m0": 0.0, "m1": 0.3, "m2": 0.6, "m3": 1.0}
    models = list(strength)
    verdicts = []
    for i in range(500):
        for x in range(4):
            for y in range(x + 1, 4):
                a, b = models[x], models[y]
                p = 1 / (1 + math.exp(-(strength[a] - strength[b])))
                for judge in ("j1", "j2"):
                    for first in ("a", "b"):
                        w = "tie" if rng.random() < 0.1 else ("a" if rng.random() < p else "b")
                        verdicts.append(Verdict(seed=f"s{i}", model_a=a, model_b=b, judge=judge, shown_first=first,
                                                winner=w, parsed=True, length_a=rng.randint(20, 200),
                                                length_b=rng.randint(20, 200)))
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats):
            t0 = time.perf_counter()
            build_report(tmp, models=models, verdicts=verdicts, dialogs=None, n_boot=2000)
            times.append(time.perf_counter() - t0)
    return {"verdicts": len(verdicts), "report_s": statistics.median(times)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-stats", action="store_true")
    ap.add_argument("--skip-judging", action="store_true")
    args = ap.parse_args()
    if not args.skip_judging:
        report_judging(bench_judging(args.seeds, args.repeats))
    if args.skip_stats:
        return
    s = bench_stats(args.repeats)
    print(f"statistics + report for {s['verdicts']} verdicts (4 models, 2000 bootstrap resamples): {s['report_s']:.2f} s")


def report_judging(j: dict[str, float]) -> None:
    print(f"judging {int(j['tasks'])} tasks: batched {j['batched_s']:.2f} s ({j['batched_verdicts_per_s']:.1f} verdicts/s), "
          f"chunks of 16 {j['chunks_of_16_s']:.2f} s ({j['chunks_of_16_verdicts_per_s']:.1f} verdicts/s), "
          f"one at a time {j['one_at_a_time_s']:.2f} s ({j['one_at_a_time_verdicts_per_s']:.1f} verdicts/s), "
          f"speed-up x{j['one_at_a_time_s'] / j['batched_s']:.1f}")


if __name__ == "__main__":
    main()

"""Throughput and memory of the format layer on synthetic chained dialogs.

Run:  .venv/bin/python benchmarks/bench_formats.py --dialogs 5000 --repeat 3
Prints one line per operation: median seconds over the repeats, dialogs/s, and the peak Python heap
(tracemalloc) of the operation, to show that JSONL inputs are streamed (validate / convert of a
JSONL file keep the heap far below the file size) while JSON-array files are whole documents.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from sage_dialog.core import io
from sage_dialog.core.schema import Dialog, Tags, Turn
from sage_dialog.formats import check_file, convert_file


def make(n: int, turns: int = 8) -> list[Dialog]:
    out = []
    for i in range(n):
        ts = []
        for j in range(turns):
            if j % 2 == 0:
                ts.append(Turn(role="user", text=f"User line {j} of dialog {i}, talking about work and family."))
            else:
                ts.append(Turn(role="assistant", text=f"Reply {j} in dialog {i}: that sounds hard; what happened next?",
                               state=Tags(motivation="venting", emotion="sad", topics=["work"]),
                               action=Tags(motivation="comfort", emotion="calm", topics=["work", "family"])))
        out.append(Dialog(id=f"identity_{i}", turns=ts))
    return out


def measure(fn: Callable[[], object], repeat: int) -> tuple[float, int]:
    """Median wall time over ``repeat`` plain runs, then one more run under tracemalloc for the peak."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return statistics.median(times), peak


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dialogs", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        src = tmp / "d.jsonl"
        io.write_jsonl(src, make(a.dialogs))
        convert_file(src, tmp / "d.json")
        mb = src.stat().st_size / 2**20
        print(f"{a.dialogs} dialogs x 8 turns; dialogs JSONL {mb:.1f} MiB, "
              f"ShareGPT JSON {(tmp / 'd.json').stat().st_size / 2**20:.1f} MiB; median of {a.repeat}")
        ops: list[tuple[str, Callable[[], object]]] = [
            ("validate dialogs.jsonl", lambda: check_file(src)),
            ("convert jsonl -> trl-sft", lambda: convert_file(src, tmp / "t.jsonl", dst_format="trl-sft")),
            ("validate trl-sft jsonl", lambda: check_file(tmp / "t.jsonl")),
            ("convert jsonl -> sharegpt json", lambda: convert_file(src, tmp / "s.json")),
            ("validate sharegpt json", lambda: check_file(tmp / "d.json")),
            ("convert sharegpt json -> jsonl", lambda: convert_file(tmp / "d.json", tmp / "b.jsonl")),
        ]
        for name, fn in ops:
            sec, peak = measure(fn, a.repeat)
            print(f"  {name:<32} {sec:7.2f} s  {a.dialogs / sec:9.0f} dialogs/s  peak heap {peak / 2**10:9.0f} KiB")


if __name__ == "__main__":
    main()

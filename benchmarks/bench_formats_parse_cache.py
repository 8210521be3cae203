"""Side by side: reading a ShareGPT file with and without the per-record tag-parse cache.

Run:  .venv/bin/python benchmarks/bench_formats_parse_cache.py --dialogs 2000 --repeat 5
Runs are interleaved (cache, no cache, cache, ...) so machine noise hits both alike.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_formats import make

from sage_dialog.core import sac
from sage_dialog.formats import _common, sharegpt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dialogs", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.json"
        sharegpt.write_sharegpt(p, make(a.dialogs))
        res: dict[str, list[float]] = {"cache": [], "no cache": []}
        for _ in range(a.repeat):
            for mode in res:
                _common._parse = functools.lru_cache(maxsize=256)(sac.parse) if mode == "cache" else sac.parse
                t = time.perf_counter()
                sharegpt.read_sharegpt(p)
                res[mode].append(time.perf_counter() - t)
    for k, v in res.items():
        print(f"{k:<9} median {statistics.median(v):.3f} s  ({', '.join(f'{x:.2f}' for x in v)})")
    print(f"speed-up {statistics.median(res['no cache']) / statistics.median(res['cache']):.2f}x")


if __name__ == "__main__":
    main()

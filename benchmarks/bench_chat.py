"""Benchmark: the cost of steering by prefill, and streaming latency, on the in-process HF backend.

1. **steering overhead**: ``steer.generate_turns`` (n=4, --max-tokens new reply tokens) with nothing
   forced, a full action forced (the model first writes its state block, stopped at ``}``), a partial
   action (state block, then the rest of the action block, then the reply) and state + full action
   forced (one call). The tiny model has random weights and rarely writes ``}``, so its block steps
   run to ``steer.BLOCK_MAX_TOKENS``: this is the worst case for the extra calls.
2. **streaming**: ``steer.stream_turn`` time to the latent event and to the first reply text vs the
   whole turn.

Medians of --repeats runs; the machine is shared, so read the ratios more than the absolute numbers.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_chat.py --repeats 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--model", help="model folder (default: build the tiny model in a temp dir)")
    args = ap.parse_args()

    from sage_dialog.backends import SamplingParams, load_backend
    from sage_dialog.roles.assistant import generate_turns, stream_turn
    from sage_dialog.roles.steering import BLOCK_MAX_TOKENS, parse_steering
    from sage_dialog.sandbox.tiny_model import build_tiny_model

    path = Path(args.model) if args.model else build_tiny_model(Path(tempfile.mkdtemp()) / "tiny")
    backend = load_backend(f"hf:{path}")
    msgs = [{"role": "user", "content": "I failed my driving test again and I feel awful."}]
    sp = SamplingParams(temperature=0.8, max_tokens=args.max_tokens, seed=0)
    cases = {
        "free (nothing forced)": None,
        "full action forced": parse_steering(["a_motivation=joke", "a_emotion=playful", "a_topic=exam"]),
        "partial action (a_emotion)": parse_steering(["a_emotion=playful"]),
        "state + full action forced": parse_steering(
            ["u_emotion=sad", "a_motivation=joke", "a_emotion=playful", "a_topic=exam"]
        ),
    }
    asyncio.run(generate_turns(backend, msgs, n=4, sampling=sp))  # warm-up

    print(f"model {path} | n=4 | max_tokens={args.max_tokens} | BLOCK_MAX_TOKENS={BLOCK_MAX_TOKENS}")
    # round-robin: every round times each case once, so load drift hits all cases alike;
    # the ratio is the median of per-round ratios to the free case
    times: dict[str, list[float]] = {k: [] for k in cases}
    toks: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.repeats):
        for name, st in cases.items():
            t = time.perf_counter()
            cands = asyncio.run(generate_turns(backend, msgs, steering=st, n=4, sampling=sp))
            times[name].append(time.perf_counter() - t)
            toks[name].append(statistics.mean(c.tokens_out for c in cands))
    free = times["free (nothing forced)"]
    print("| case | median s | median per-round ratio to free | reply tokens (mean of 4) |")
    print("|---|---|---|---|")
    for name in cases:
        ratio = statistics.median(a / b for a, b in zip(times[name], free, strict=True))
        print(f"| {name} | {statistics.median(times[name]):.2f} | {ratio:.2f}x | {statistics.mean(toks[name]):.0f} |")

    async def one_stream(st):
        t0 = time.perf_counter()
        t_latent = t_text = None
        async for ev in stream_turn(backend, msgs, steering=st, sampling=sp):
            if ev.kind == "latent" and t_latent is None:
                t_latent = time.perf_counter() - t0
            if ev.kind == "text" and t_text is None:
                t_text = time.perf_counter() - t0
        return t_latent or 0.0, t_text or 0.0, time.perf_counter() - t0

    print("\n| streaming | latent s | first text s | whole turn s |")
    print("|---|---|---|---|")
    for name in ("free (nothing forced)", "state + full action forced"):
        runs = [asyncio.run(one_stream(cases[name])) for _ in range(args.repeats)]
        med = [statistics.median(x) for x in zip(*runs, strict=True)]
        print(f"| {name} | {med[0]:.2f} | {med[1]:.2f} | {med[2]:.2f} |")


if __name__ == "__main__":
    main()

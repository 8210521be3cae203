"""hf: decoding and scoring time of SmolLM2-135M in one number format (float32, bfloat16 or fast).

One warm-up call first (a bfloat16 call on a CPU pays oneDNN's kernel setup once), then a timed
batch of ``--rows`` sampled replies (temperature 0.7, top-p 0.9, top-k 40, up to 96 tokens: the
quickstart's sampling) and 4 score requests over ~560-token prompts (a judge's three options).
Run each format in its own process, side by side on an idle machine:

    for d in float32 bfloat16; do .venv/bin/python benchmarks/bench_hf_dtype.py --dtype $d; done

Results: benchmarks/RESULTS-real-model.md ("Where the quickstart's time went").
"""

from __future__ import annotations

import argparse
import asyncio
import time

from sage_dialog.backends.base import BackendConfig, ChatRequest, SamplingParams, ScoreRequest, load_backend

OPENING = "Hi! How are you doing today? I just got back from a long trip to the mountains and I'm pretty tired."


async def measure(dtype: str, rows: int, model: str) -> None:
    be = load_backend(BackendConfig(spec=f"hf:{model}", options={"dtype": dtype}))
    sp = SamplingParams(temperature=0.7, top_p=0.9, top_k=40, repetition_penalty=1.15, max_tokens=96, seed=1)
    reqs = [ChatRequest(messages=[{"role": "user", "content": f"{OPENING} ({i})"}], n=1, sampling=sp)
            for i in range(rows)]
    long = " ".join(["The user says something long about their day and their feelings."] * 40)
    scores = [ScoreRequest(messages=[{"role": "user", "content": f"{long} {i}"}], options=[" A", " B", " tie"],
                           prefill="The answer is") for i in range(4)]
    await be.generate(reqs)  # warm-up
    await be.score(scores[:1])
    t = time.perf_counter()
    res = await be.generate(reqs)
    gen_s = time.perf_counter() - t
    tokens = sum(r.completions[0].tokens_out for r in res)
    t = time.perf_counter()
    await be.score(scores)
    score_s = time.perf_counter() - t
    print(f"dtype={dtype} ({be.dtype}) generate {rows} rows: {gen_s:.2f} s, {tokens} tokens, "
          f"{tokens / gen_s:.1f} tokens/s; score 4 x ~560-token prompts: {score_s:.2f} s")
    await be.aclose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "fast"])
    ap.add_argument("--rows", type=int, default=8, help="sampled replies in the timed batch")
    ap.add_argument("--model", default="smollm2-135m", help="a model folder, .gguf file or short name")
    args = ap.parse_args()
    asyncio.run(measure(args.dtype, args.rows, args.model))


if __name__ == "__main__":
    main()

"""Option scoring on the ``vllm:`` backend: decode steps with ``logprob_token_ids`` vs ``prompt_logprobs``.

``score()`` asks, for each distinct context (the prompt; prompt + the first tokens of a multi-token
option), one decode step that returns the log-probabilities of the option tokens that follow it
(``logprob_token_ids``): prompts are prefilled once and read from the prefix cache. The reference is
the way the backend scored before (and still does on vLLM < 0.32): one request per prompt + option
with ``prompt_logprobs``, which vLLM runs without prefix-cache reads and with the LM head on every
prompt position. A prefill of the prompts alone (one decode step, no logprobs) is the floor. Every
timed run starts from an empty prefix cache and uses fresh prompts; the two paths' scores are checked
equal. Run it in the vLLM virtualenv:

    VLLM_CPU_KVCACHE_SPACE=2 .venv-vllm/bin/python benchmarks/bench_vllm_score.py \
        --model ~/.cache/sage-dialog/gguf/<hash>-float32 --prompts 16 --words 100

``--backend-option dtype=bfloat16`` or ``VLLM_CPU_NUM_OF_RESERVED_CPU=1`` in the environment
reproduce vLLM's own CPU defaults (bfloat16, one core kept for the scheduler), and
``--backend-option block_size=128`` its KV block size; ``--words 10 --options " joking, saying
goodbye, thanking"`` is the annotator's case: short prompts, multi-token labels.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

OPTIONS = [" yes", " no", " maybe", " never"]


def prompts(tag: str, n: int, words: int) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": " ".join(f"{tag}{j} of message {i}" for j in range(words))}]
            for i in range(n)]


def main() -> None:
    import yaml

    from sage_dialog.backends.base import ChatRequest, SamplingParams, ScoreRequest, load_backend

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="model folder (or anything vllm: accepts)")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--words", type=int, default=100, help="prompt length: ~7 tokens per word group")
    ap.add_argument("--options", default=",".join(OPTIONS),
                    help="comma-separated options, e.g. ' joking, saying goodbye, thanking' (multi-token)")
    ap.add_argument("--backend-option", action="append", default=[], metavar="K=V")
    args = ap.parse_args()
    options = args.options.split(",")
    opts = {"max_model_len": 2048}
    for kv in args.backend_option:
        k, v = kv.split("=", 1)
        opts[k] = yaml.safe_load(v)
    t0 = time.perf_counter()
    b = load_backend(f"vllm:{args.model}", **opts)
    print(f"engine start {time.perf_counter() - t0:.1f} s", flush=True)
    tok = b.tokenizer

    def timed(label: str, fn):  # type: ignore[no-untyped-def]
        b.llm.reset_prefix_cache()
        t = time.perf_counter()
        out = fn()
        print(f"{label}: {time.perf_counter() - t:.1f} s", flush=True)
        return out

    async def prefill(tag: str) -> None:
        sp = SamplingParams(max_tokens=1, temperature=0.0)
        await b.generate([ChatRequest(messages=m, sampling=sp) for m in prompts(tag, args.prompts, args.words)])

    def ids(tag: str) -> tuple[list[list[int]], list[list[list[int]]]]:
        reqs = [ScoreRequest(messages=m, options=options) for m in prompts(tag, args.prompts, args.words)]
        from sage_dialog.backends.prompting import render_prompt

        p = [tok(render_prompt(tok, r.messages, None), add_special_tokens=False)["input_ids"] for r in reqs]
        o = [[tok(x, add_special_tokens=False)["input_ids"] for x in options] for _ in reqs]
        return p, o

    asyncio.run(prefill("warm"))
    timed("prefill of the prompts alone", lambda: asyncio.run(prefill("a")))
    p, o = ids("b")
    new = timed(f"score, decode steps ({args.prompts} prompts of {len(p[0])} tokens x {len(options)} options)",
                lambda: b._next_token_logprobs(p, o))
    old = timed("score, prompt_logprobs", lambda: b._prompt_logprobs(p, o))
    worst = max(abs(new[k] - old[k]) for k in new)
    print(f"largest difference between the two paths' log-probabilities: {worst:.2e}")
    asyncio.run(b.aclose())


if __name__ == "__main__":
    main()

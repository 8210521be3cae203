"""Benchmark: search in the latent (``latent``, ``mcts``) against text best-of-N, in the sandbox world.

The demo's M1 (a tiny Llama fine-tuned on the sandbox corpus, ``sage-dialog demo`` stage ``sft``)
is the assistant; the sandbox's oracle user answers and the oracle selector judges (``--judge SPEC``: an
LLM judge instead, e.g. ``hf:smollm2-135m`` in choice mode; the reward stays the ground truth). Every strategy
searches from the same held-out seeds (the demo's evaluation seeds, never searched or trained on)
and the ground-truth reward of the best path of each seed is recorded with the assistant tokens the
strategy generated for that seed (completions only: state blocks, sampled action blocks, replies,
lookahead replies; the scoring pass generates none and is reported apart).

Strategies and their cost knobs:

* ``best_of_n``: N sampled replies per turn (N = 1, 2, 4, 8);
* ``latent``: the K actions the model finds most likely in the sandbox's closed set of six, one
  reply each (K = 1, 2, 3, 6);
* ``mcts``: PUCT over the top 4 actions, ``simulations`` replies per turn (2, 4, 8), 2 per round.

Reported: mean reward and generated tokens per seed of each setting, and paired bootstrap 95%
intervals (over seeds) of latent/mcts minus best-of-N at comparable and at double token budgets.
Writes ``results.json`` and ``reward_vs_tokens.png`` (matplotlib, else Pillow) into ``--out``.

``--dpo`` runs the learning side instead: one ``mcts`` search on the demo's training seeds, then DPO
from M1 on its text-level pairs, on its action-level pairs, and on its action-level pairs with
``loss_on: tags``; each model plays the held-out seeds (temperature 0.7, 4 turns, the oracle user)
and its ground-truth reward is compared, paired over seeds (``dpo_results.json``).

    HF_HUB_OFFLINE=1 .venv/bin/sage-dialog demo -o /tmp/latent/demo      # M1 (stage sft) if not there yet
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_latent_search.py --m1 /tmp/latent/demo/sft/model \\
        --seeds 64 --turns 4 --out /tmp/latent/bench
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

SETTINGS: list[tuple[str, dict[str, Any]]] = [
    *[(f"best_of_n N={n}", {"strategy": "best_of_n", "candidates": n}) for n in (1, 2, 4, 8)],
    *[(f"latent K={k}", {"strategy": "latent", "latent": {"action_set": "sandbox", "k": k}}) for k in (1, 2, 3, 6)],
    *[(f"mcts sims={s}", {"strategy": "mcts", "latent": {"action_set": "sandbox", "k": 4, "simulations": s,
                                                          "batch": 2}}) for s in (2, 4, 8)],
]


def paired_ci(a: list[float], b: list[float], n_boot: int = 5000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of a - b over seeds and its 95% percentile bootstrap interval (seeds resampled in pairs)."""
    from sage_dialog.stages.compare.stats import percentile_interval

    d = np.asarray(a) - np.asarray(b)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(axis=1)
    lo, hi = percentile_interval(means)
    return float(d.mean()), float(lo), float(hi)


def run_setting(backend: Any, seeds: list[str], name: str, spec: dict[str, Any], turns: int, out: Path,
                seed: int, selector: Any = None) -> dict[str, Any]:
    """One search setting on ``seeds``; ``selector`` is the judge (default: the oracle selector)."""
    from sage_dialog.core import io
    from sage_dialog.core.schema import Dialog
    from sage_dialog.roles.sampling import SamplingConfig
    from sage_dialog.sandbox import world
    from sage_dialog.sandbox.oracles import oracle_for
    from sage_dialog.stages.search.config import SearchConfig
    from sage_dialog.stages.search.search import run_search

    cfg = SearchConfig.model_validate({
        "turns": turns, "max_resamples": 0, "seed": seed,
        "sampling": SamplingConfig(temperature=1.0, top_k=0, repetition_penalty=1.0, max_tokens=64), **spec})
    d = out / name.replace(" ", "_").replace("=", "")
    t0 = time.perf_counter()
    run_search(backend, oracle_for("user", seed=seed), selector or oracle_for("selector"), seeds, cfg, d,
               transcripts=False)
    wall = time.perf_counter() - t0
    best = list(io.read_jsonl(d / "best.jsonl", Dialog))
    metas = [io.read_json(p) for p in sorted((d / "trees").glob("seed-*.meta.json"))]
    rewards = [world.dialog_reward(x) for x in best]
    fits = [f for x in best for f in world.score_turns(x.turns).fits]
    return {"name": name, "spec": spec, "rewards": rewards, "reward": float(np.mean(rewards)),
            "generated": [m["generated_tokens"] for m in metas],
            "gen_tokens": float(np.mean([m["generated_tokens"] for m in metas])),
            "tokens": float(np.mean([m["tokens"] for m in metas])),
            "requests": float(np.mean([m["requests"] for m in metas])),
            "fitting": fits.count(1) / len(fits), "wall_s": round(wall, 1)}


def plot(rows: list[dict[str, Any]], path: Path) -> str:
    """Reward against generated tokens per seed, one line per strategy; returns the library used."""
    groups: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        groups.setdefault(r["spec"]["strategy"], []).append((r["gen_tokens"], r["reward"]))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for k, pts in groups.items():
            ax.plot(*zip(*sorted(pts), strict=True), marker="o", label=k)
        ax.set_xscale("log")
        ax.set_xlabel("generated assistant tokens per seed")
        ax.set_ylabel("ground-truth reward of the best path")
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        return "matplotlib"
    except ImportError:
        pass
    from PIL import Image, ImageDraw

    w, h, m = 640, 420, 60
    img = Image.new("RGB", (w, h), "white")
    dr = ImageDraw.Draw(img)
    xs = [np.log10(x) for pts in groups.values() for x, _ in pts]
    ys = [y for pts in groups.values() for _, y in pts]
    x0, x1 = min(xs) - 0.05, max(xs) + 0.05
    y0, y1 = min(ys) - 0.05, max(ys) + 0.05

    def px(x: float, y: float) -> tuple[float, float]:
        return m + (np.log10(x) - x0) / (x1 - x0) * (w - 2 * m), h - m - (y - y0) / (y1 - y0) * (h - 2 * m)

    dr.rectangle([m, m, w - m, h - m], outline="black")
    for t in range(int(np.floor(x0)), int(np.ceil(x1)) + 1):
        for mult in (1, 2, 5):
            v = mult * 10 ** t
            if x0 <= np.log10(v) <= x1:
                X, _ = px(v, y0)
                dr.line([X, h - m, X, h - m + 5], fill="black")
                dr.text((X - 10, h - m + 8), f"{v:g}", fill="black")
    for k in range(6):
        y = y0 + k * (y1 - y0) / 5
        _, Y = px(10 ** x0, y)
        dr.line([m - 5, Y, m, Y], fill="black")
        dr.text((8, Y - 6), f"{y:.2f}", fill="black")
    dr.text((w / 2 - 130, h - 25), "generated assistant tokens per seed (log)", fill="black")
    dr.text((m, 20), "ground-truth reward of the best path (sandbox, M1)", fill="black")
    colours = {"best_of_n": "blue", "latent": "green", "mcts": "red"}
    for i, (k, pts) in enumerate(groups.items()):
        c = colours.get(k, "black")
        P = [px(x, y) for x, y in sorted(pts)]
        if len(P) > 1:
            dr.line(P, fill=c, width=2)
        for X, Y in P:
            dr.ellipse([X - 4, Y - 4, X + 4, Y + 4], fill=c)
        dr.text((w - m - 90, h - m - 60 + 16 * i), k, fill=c)
    img.save(path)
    return "pillow"


def dpo_experiment(backend: Any, m1: Path, out: Path, n_search: int, n_eval: int, turns: int, seed: int) -> None:
    """DPO from M1 on text-level vs action-level pairs of the same search (mcts, 4 replies per turn on the
    demo's training seeds); ground-truth reward of each model on held-out seeds, paired CIs."""
    import asyncio

    from sage_dialog.backends.base import BackendConfig, SamplingParams, load_backend
    from sage_dialog.core import io
    from sage_dialog.roles.rollout import play_dialogs
    from sage_dialog.sandbox import world
    from sage_dialog.sandbox.oracles import oracle_for
    from sage_dialog.stages import prefs
    from sage_dialog.train.config import DPORunConfig
    from sage_dialog.train.dpo import train_dpo

    search_seeds = world.seed_openings(n_search, seed + 1)  # the demo's search seeds (training side)
    spec = {"strategy": "mcts", "latent": {"action_set": "sandbox", "k": 4, "simulations": 4, "batch": 2}}
    r = run_setting(backend, search_seeds, "dpo-search", spec, 3, out, seed)
    print(f"search for DPO: {n_search} seeds, reward {r['reward']:+.3f}, {r['gen_tokens']:.0f} gen tokens/seed", flush=True)
    variants = {"text": ("text", "turn"), "action": ("action", "turn"), "action-tags": ("action", "tags")}
    models: dict[str, Path] = {"M1": m1}
    for name, (level, loss_on) in variants.items():
        pdir = out / f"prefs-{level}"
        if not (pdir / "pairs.jsonl").exists():
            counts = prefs.run(prefs.Settings(level=level, min_margin=0.5),
                               inputs=prefs.Inputs(source=out / "dpo-search" / "trees"), out=pdir).counts
            print(f"  {level} pairs: {counts}", flush=True)
        mdir = out / f"dpo-{name}"
        if not (mdir / "config.json").exists():
            t0 = time.perf_counter()
            train_dpo(DPORunConfig.model_validate({
                "model": {"name_or_path": str(m1)}, "adapter": {"method": "full"},
                "data": {"train": str(pdir / "pairs.jsonl"), "max_length": 512, "loss_on": loss_on},
                "train": {"epochs": 2.0, "learning_rate": 5e-4, "batch_size": 8, "logging_steps": 25,
                          "save_total_limit": 1, "save_steps": 100000, "device": "cpu", "seed": seed},
                "dpo": {"beta": 0.1, "sft_weight": 1.0}, "output_dir": str(mdir)}))
            print(f"  DPO {name}: {time.perf_counter() - t0:.0f}s", flush=True)
        models[f"DPO-{name}"] = mdir
    eval_seeds = world.seed_openings(n_eval, seed + 2)
    rewards: dict[str, list[float]] = {}
    for name, path in models.items():
        be = load_backend(BackendConfig(spec=f"hf:{path}", options={"batch_size": 64, "device": "cpu"}))
        dialogs = asyncio.run(play_dialogs(be, oracle_for("user", seed=seed + 7), eval_seeds, turns=4,
                                           sampling=SamplingParams(temperature=0.7, max_tokens=64), seed=seed + 7))
        rewards[name] = [world.dialog_reward(d) for d in dialogs]
        print(f"  eval {name:16} reward {np.mean(rewards[name]):+.3f}", flush=True)
    res: dict[str, Any] = {"rewards": {k: float(np.mean(v)) for k, v in rewards.items()}, "diffs": {}}
    for a, b in [("DPO-text", "M1"), ("DPO-action", "M1"), ("DPO-action-tags", "M1"), ("DPO-action", "DPO-text"),
                 ("DPO-action-tags", "DPO-text")]:
        m, lo, hi = paired_ci(rewards[a], rewards[b])
        res["diffs"][f"{a} - {b}"] = [m, lo, hi]
        print(f"  {a} - {b}: {m:+.3f} [{lo:+.3f}, {hi:+.3f}]{' *' if lo > 0 or hi < 0 else ''}", flush=True)
    io.write_json(out / "dpo_results.json", res)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--m1", type=Path, required=True, help="the demo's M1 (DEMO/sft/model)")
    ap.add_argument("--seeds", type=int, default=64)
    ap.add_argument("--turns", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", help="comma-separated setting names to run (default: all)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/latent-bench"))
    ap.add_argument("--dpo", action="store_true", help="run the DPO experiment (text vs action pairs) instead")
    ap.add_argument("--dpo-search-seeds", type=int, default=96)
    ap.add_argument("--judge", default="oracle",
                    help="the search's judge: oracle (default) or a backend spec, e.g. hf:smollm2-135m (an LLM judge)")
    ap.add_argument("--judge-mode", default="logprob", choices=["generate", "logprob"],
                    help="an LLM judge's mode (logprob: choice by option scores, always parses)")
    args = ap.parse_args()
    import torch

    from sage_dialog.backends.base import BackendConfig, load_backend
    from sage_dialog.sandbox import world

    torch.set_num_threads(1)
    backend = load_backend(BackendConfig(spec=f"hf:{args.m1}", options={"batch_size": 64, "device": "cpu"}))
    if args.dpo:
        dpo_experiment(backend, args.m1, args.out, args.dpo_search_seeds, args.seeds, args.turns, args.seed)
        return
    seeds = world.seed_openings(args.seeds, args.seed + 2)  # the demo's held-out evaluation seeds
    selector = None
    if args.judge != "oracle":
        from sage_dialog.roles.factory import BackendPool, make_selector

        pool = BackendPool(options={"batch_size": 64, "device": "cpu"})
        selector = make_selector(args.judge, pool, criteria="companion", mode=args.judge_mode)
    only = set(args.only.split(",")) if args.only else None
    rows = []
    for name, spec in SETTINGS:
        if only and name not in only:
            continue
        r = run_setting(backend, seeds, name, spec, args.turns, args.out, args.seed, selector)
        rows.append(r)
        print(f"{name:18} reward {r['reward']:+.3f}  gen tokens/seed {r['gen_tokens']:7.1f}  "
              f"all tokens/seed {r['tokens']:8.1f}  requests/seed {r['requests']:5.1f}  fitting {r['fitting']:.0%}  "
              f"{r['wall_s']}s", flush=True)
    by = {r["name"]: r for r in rows}
    comps = []
    text = [r for r in rows if r["spec"]["strategy"] == "best_of_n"]
    for r in rows:
        if r["spec"]["strategy"] == "best_of_n":
            continue
        for t in text:  # every best-of-N that spent at least as many generated tokens
            if t["gen_tokens"] >= 0.8 * r["gen_tokens"]:
                m, lo, hi = paired_ci(r["rewards"], t["rewards"])
                comps.append({"a": r["name"], "b": t["name"], "tokens_a": r["gen_tokens"], "tokens_b": t["gen_tokens"],
                              "diff": m, "ci": [lo, hi]})
                print(f"  {r['name']:16} - {t['name']:16} ({r['gen_tokens']:.0f} vs {t['gen_tokens']:.0f} tokens): "
                      f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}]{' *' if lo > 0 or hi < 0 else ''}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    lib = plot(rows, args.out / "reward_vs_tokens.png")
    with open(args.out / "results.json", "w") as fh:
        json.dump({"rows": rows, "comparisons": comps, "seeds": args.seeds, "turns": args.turns, "judge": args.judge,
                   "plot": lib, "settings": list(by)}, fh, indent=1)
    print(f"-> {args.out}/results.json, reward_vs_tokens.png ({lib})")


if __name__ == "__main__":
    main()

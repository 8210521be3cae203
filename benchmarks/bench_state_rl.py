"""State-level RL against token-level GRPO and search + DPO, on ground truth, in two sandbox worlds.

From the demo's M1, each arm spends about the same number of environment interactions (user-
simulator turns) and is then measured *without search at inference*: the trained policy plays
held-out seed openings against the oracle user of the same world (temperature 0.7), and every dialog
gets the world's ground-truth reward. Arms:

* ``state``   - ``rl`` stage, credit state (GiGPO-like, grouped by the policy's own state block)
* ``token``   - ``rl`` stage, credit token (plain GRPO on the dialog reward)
* ``search_dpo`` - best-of-4 text search with the oracle selector, text pairs, DPO (the demo's loop)
* ``latent_dpo`` - latent search over the world's actions (K=4), action-level pairs, DPO on the tags

Worlds: ``standard`` (the demo's) and ``long_horizon`` (``sandbox/rules.py``: delayed consequences,
per-turn greedy choice wrong by design). Results: ``results.json`` (per-seed rewards, paired bootstrap
CIs against M1 and between arms, the RL learning curves) and ``reward_vs_interactions.png``.

    HF_HUB_OFFLINE=1 .venv/bin/sage-dialog demo -o demo-out            # M1 = demo-out/sft/model
    HF_HUB_OFFLINE=1 TRL_EXPERIMENTAL_SILENCE=1 .venv/bin/python benchmarks/bench_state_rl.py \\
        --m1 demo-out/sft/model --out /tmp/state-rl

Arms already finished in ``--out`` are read back, not run again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from sage_dialog.backends.base import BackendConfig, SamplingParams, load_backend
from sage_dialog.core import threads
from sage_dialog.roles.rollout import play_dialogs
from sage_dialog.sandbox import rules, world
from sage_dialog.sandbox.oracles import oracle_for

ARMS = ("state", "token", "search_dpo", "latent_dpo")
WORLDS = ("standard", "long_horizon")


def paired(a: list[float], b: list[float], n_boot: int = 5000, seed: int = 0) -> dict[str, float]:
    """Mean of a - b over paired seeds with its 95% percentile bootstrap interval."""
    d = np.asarray(a) - np.asarray(b)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"diff": float(d.mean()), "lo": float(lo), "hi": float(hi)}


def evaluate(model: Path, preset: str, seeds: list[str], turns: int, seed: int) -> list[float]:
    """Ground-truth reward of each held-out dialog the model plays (no search at inference)."""
    backend = load_backend(BackendConfig(spec=f"hf:{model}", options={"batch_size": 64, "device": "cpu"}))
    dialogs = asyncio.run(play_dialogs(backend, oracle_for("user", seed=seed + 7, rules=preset), seeds, turns=turns,
                                       sampling=SamplingParams(temperature=0.7, max_tokens=64), seed=seed + 7))
    asyncio.run(backend.aclose())
    return [rules.dialog_reward(preset, d.turns) for d in dialogs]


def run_rl(credit: str, preset: str, m1: Path, seeds_file: Path, out: Path, a: argparse.Namespace) -> dict[str, Any]:
    from sage_dialog.stages import rl
    from sage_dialog.train.config import ModelSection

    spec = f"oracle:{preset}"
    settings = rl.Settings.model_validate({
        "credit": credit, "loss_on": a.loss_on, "adapter": {"method": "full"}, "threads": a.threads,
        "state_scope": a.state_scope, "state_key": a.state_key,
        "rollout": {"turns": a.turns, "user": spec, "temperature": 1.0, "max_tokens": 48},
        "reward": {"source": "ground_truth", "oracle": spec},
        "train": {"steps": a.rl_steps, "prompts_per_step": a.prompts, "group_size": a.group,
                  "learning_rate": a.lr, "beta": a.beta, "save_steps": 10, "device": "cpu", "seed": a.seed},
        "gates": {"stall_steps": None, "max_kl": None}})
    res = rl.run(settings, inputs=rl.Inputs(model=ModelSection(name_or_path=str(m1)), seeds=seeds_file), out=out)
    hist = json.loads((out / "rl_summary.json").read_text())["log_history"]
    per_step = a.prompts * a.group * (a.turns - 1)
    curve = [(int(h["step"]) * per_step, float(h["reward"])) for h in hist if "reward" in h]
    return {"model": str(out), "interactions": res.counts["interactions"], "reward_calls": res.counts["dialogs"],
            "curve": curve, "seconds": res.seconds}


def run_search_dpo(kind: str, preset: str, m1: Path, seeds_file: Path, n_seeds: int, out: Path,
                   a: argparse.Namespace) -> dict[str, Any]:
    from sage_dialog.stages import prefs
    from sage_dialog.stages.search import stage as search
    from sage_dialog.stages.search.stage import SearchRunConfig
    from sage_dialog.train.config import DPORunConfig
    from sage_dialog.train.dpo import train_dpo

    t0 = time.perf_counter()
    spec = f"oracle:{preset}"
    strategy: dict[str, Any] = {"strategy": "best_of_n", "candidates": 4} if kind == "search_dpo" else \
        {"strategy": "latent", "latent": {"action_set": "sandbox", "k": 4}}
    scfg = SearchRunConfig.model_validate({
        "seeds": str(seeds_file), "max_seeds": n_seeds, "out": str(out / "search"), "assistant": f"hf:{m1}",
        "user": spec, "judge": spec, "assistant_persona": "none", "backend_options": {"batch_size": 64, "device": "cpu"},
        "config": {**strategy, "turns": a.turns, "max_resamples": 0, "seed": a.seed,
                   "sampling": {"temperature": 1.0, "top_k": 0, "repetition_penalty": 1.0, "max_tokens": 64}}})
    sres = search.run(scfg)
    level = "text" if kind == "search_dpo" else "action"
    counts = prefs.run(prefs.Settings(min_margin=0.5, level=level), inputs=prefs.Inputs(source=out / "search" / "trees"),
                       out=out / "prefs").counts
    dcfg = DPORunConfig.model_validate({
        "model": {"name_or_path": str(m1)}, "adapter": {"method": "full"},
        "data": {"train": str(out / "prefs" / "pairs.trl.jsonl"), "max_length": 512,
                 "loss_on": "turn" if kind == "search_dpo" else "tags"},
        "train": {"epochs": 2.0, "learning_rate": 5e-4, "batch_size": 8, "logging_steps": 25, "save_steps": None,
                  "save_total_limit": 1, "device": "cpu", "seed": a.seed},
        "dpo": {"beta": 0.1, "sft_weight": 1.0}, "output_dir": str(out / "dpo")})
    model = train_dpo(dcfg)
    return {"model": str(model), "interactions": n_seeds * (a.turns - 1), "reward_calls": sres.counts.get("decisions"),
            "pairs": counts.get("pairs"), "search_counts": sres.counts, "seconds": time.perf_counter() - t0}


def real_arm(a: argparse.Namespace) -> dict[str, Any]:
    """A real pretrained policy: SmolLM2-135M LoRA-fine-tuned on the sandbox corpus, then state-level RL
    (LoRA on the SFT model) against the oracle user and reward of ``--real-world``; held-out reward before
    and after. Written to ``OUT/smollm2/``."""
    from sage_dialog.stages import rl
    from sage_dialog.train.config import ModelSection, SFTRunConfig
    from sage_dialog.train.export import export_model
    from sage_dialog.train.sft import train_sft

    out = a.out / "smollm2"
    res_path = out / "results.json"
    if res_path.exists():
        return json.loads(res_path.read_text())
    preset = a.real_world
    t0 = time.perf_counter()
    sft_dir = out / "sft"
    if not (sft_dir / "merged" / "config.json").exists():
        cfg = SFTRunConfig.model_validate({
            "model": {"name_or_path": "smollm2-135m"},
            "adapter": {"method": "lora", "r": 16, "alpha": 32, "target_modules": "all-linear"},
            "data": {"train": str(a.real_data), "max_length": 384, "limit": a.real_sft_dialogs},
            "train": {"epochs": 1.0, "learning_rate": 1e-3, "batch_size": 8, "logging_steps": 10, "save_steps": None,
                      "save_total_limit": 1, "device": "cpu", "seed": a.seed, "precision": "fast"},
            "output_dir": str(sft_dir / "adapter")})
        export_model(train_sft(cfg), sft_dir / "merged")
    sft_s = time.perf_counter() - t0
    spec = f"oracle:{preset}"
    settings = rl.Settings.model_validate({
        "credit": "state", "loss_on": "action+reply", "threads": a.threads,
        "adapter": {"method": "lora", "r": 16, "alpha": 32, "target_modules": "all-linear"},
        "rollout": {"turns": a.turns, "user": spec, "temperature": 1.0, "max_tokens": 48},
        "reward": {"source": "ground_truth", "oracle": spec},
        "train": {"steps": a.real_steps, "prompts_per_step": a.prompts, "group_size": a.group, "learning_rate": 5e-4,
                  "beta": a.beta, "save_steps": 5, "device": "cpu", "seed": a.seed, "resume": True,
                  "precision": "fast"},
        "gates": {"stall_steps": None, "max_kl": None}})
    seeds_file = a.out / "train_seeds.txt"
    t1 = time.perf_counter()
    res = rl.run(settings, inputs=rl.Inputs(model=ModelSection(name_or_path=str(sft_dir / "merged")),
                                             seeds=seeds_file), out=out / "rl")
    export_model(out / "rl", out / "rl-merged")
    rl_s = time.perf_counter() - t1
    held_out = world.seed_openings(a.eval_seeds, a.seed + 2)
    before = evaluate(sft_dir / "merged", preset, held_out, a.eval_turns, a.seed)
    after = evaluate(out / "rl-merged", preset, held_out, a.eval_turns, a.seed)
    hist = json.loads((out / "rl" / "rl_summary.json").read_text())["log_history"]
    result = {"world": preset, "sft_seconds": sft_s, "rl_seconds": rl_s, "interactions": res.counts["interactions"],
              "before": {"rewards": before, "mean": float(np.mean(before))},
              "after": {"rewards": after, "mean": float(np.mean(after))}, "after_vs_before": paired(after, before),
              "curve": [(int(h["step"]), float(h["reward"])) for h in hist if "reward" in h]}
    res_path.write_text(json.dumps(result, indent=1))
    return result


def reeval(a: argparse.Namespace) -> dict[str, Any]:
    """Evaluate the models that earlier runs trained (``--reeval OUT ...``) on ``--eval-seeds`` held-out
    seeds of ``--worlds``' first world, and compare every arm with every other, paired. More seeds
    narrow the intervals that 64 left wide; the first 64 seeds are the usual ones."""
    preset = a.worlds[0]
    held_out = world.seed_openings(a.eval_seeds, a.seed + 2)
    models: dict[str, str] = {"M1": str(a.m1)}
    for d in a.reeval:
        res = json.loads((d / "results.json").read_text()).get(preset, {})
        for arm, info in res.items():
            models[f"{d.name}/{arm}"] = info["model"]
    rewards = {name: evaluate(Path(m), preset, held_out, a.eval_turns, a.seed) for name, m in models.items()}
    out = {"world": preset, "eval_seeds": a.eval_seeds, "means": {k: float(np.mean(v)) for k, v in rewards.items()},
           "paired": {f"{x} - {y}": paired(rewards[x], rewards[y]) for x in rewards for y in rewards if x < y},
           "rewards": rewards}
    (a.out / f"reeval-{preset}-{a.eval_seeds}.json").write_text(json.dumps(out, indent=1))
    return out


def plot(results: dict[str, Any], path: Path) -> None:
    """Training reward against interactions (RL arms, one line each) and the search + DPO arms' budgets."""
    from PIL import Image, ImageDraw

    w, h, m = 760, 360, 56
    img = Image.new("RGB", (2 * w, h), "white")
    dr = ImageDraw.Draw(img)
    colours = {"state": "red", "token": "blue", "search_dpo": "green", "latent_dpo": "purple",
               "state (100 steps)": "orange", "token (100 steps)": "darkcyan"}
    y0, y1 = -1.0, 2.0
    for col, preset in enumerate(WORLDS):
        arms = results.get(preset, {})
        pts = [p for arm in arms.values() for p in arm.get("curve", [])]
        xmax = max([p[0] for p in pts] + [arm.get("interactions", 1) for arm in arms.values()] + [1])
        ox = col * w

        def px(x: float, y: float, ox: int = ox, xmax: float = xmax) -> tuple[float, float]:
            return ox + m + x / xmax * (w - 2 * m), h - m - (y - y0) / (y1 - y0) * (h - 2 * m)

        dr.rectangle([ox + m, m, ox + w - m, h - m], outline="black")
        for k in range(7):
            y = y0 + k * 0.5
            _, Y = px(0, y)
            dr.text((ox + 14, Y - 6), f"{y:+.1f}", fill="black")
        for k in range(5):
            x = xmax * k / 4
            X, _ = px(x, y0)
            dr.text((X - 12, h - m + 6), f"{x:.0f}", fill="black")
        dr.text((ox + m, 16), f"{preset}: training reward (RL) and held-out reward (all) vs user turns", fill="black")
        dr.text((ox + w / 2 - 60, h - 22), "user-simulator turns", fill="black")
        for i, (arm, r) in enumerate(arms.items()):
            c = colours.get(arm, "black")
            curve = [px(x, y) for x, y in r.get("curve", [])]
            if len(curve) > 1:
                dr.line(curve, fill=c, width=2)
            if "eval_mean" in r:
                X, Y = px(r["interactions"], r["eval_mean"])
                dr.ellipse([X - 5, Y - 5, X + 5, Y + 5], outline=c, width=3)
            dr.text((ox + m + 8, m + 8 + 14 * i), f"{arm} (line: training; circle: held-out)", fill=c)
        if "M1" in results.get(f"{preset}_eval", {}):
            _, Y = px(0, results[f"{preset}_eval"]["M1"]["mean"])
            dr.line([ox + m, Y, ox + w - m, Y], fill="gray")
            dr.text((ox + w - m - 30, Y - 14), "M1", fill="gray")
    img.save(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--m1", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--worlds", nargs="+", default=list(WORLDS), choices=WORLDS)
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    p.add_argument("--rl-steps", type=int, default=40)
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--group", type=int, default=4)
    p.add_argument("--turns", type=int, default=3)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--beta", type=float, default=0.02)
    p.add_argument("--loss-on", default="action+reply")
    p.add_argument("--state-scope", default="group", choices=("group", "batch"), help="rl state_scope (credit=state)")
    p.add_argument("--state-key", default="state+turn", choices=("state", "state+turn", "state+last_action"))
    p.add_argument("--eval-seeds", type=int, default=64)
    p.add_argument("--eval-turns", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--smollm2", action="store_true", help="run only the real-model arm (SmolLM2-135M)")
    p.add_argument("--reeval", type=Path, nargs="+", help="evaluate the arms these earlier OUT folders trained "
                   "on --eval-seeds held-out seeds, paired against each other (written to OUT)")
    p.add_argument("--real-data", type=Path, help="SAC-tagged SFT data of the sandbox (a demo run's mix/train.jsonl)")
    p.add_argument("--real-sft-dialogs", type=int, default=240)
    p.add_argument("--real-steps", type=int, default=20)
    p.add_argument("--real-world", default="standard", choices=WORLDS)
    a = p.parse_args()
    threads.apply(a.threads)
    a.out.mkdir(parents=True, exist_ok=True)
    interactions = a.rl_steps * a.prompts * a.group * (a.turns - 1)
    n_search = interactions // (a.turns - 1)  # search plays one user turn per seed and turn after the first
    seeds_file = a.out / "train_seeds.txt"
    seeds_file.write_text("\n".join(world.seed_openings(max(n_search, 400), a.seed + 11)) + "\n", encoding="utf-8")
    held_out = world.seed_openings(a.eval_seeds, a.seed + 2)  # the demo's evaluation seeds: never trained on
    if a.reeval:
        r = reeval(a)
        for k, v in r["means"].items():
            print(f"{k}: {v:+.3f}")
        for k, v in r["paired"].items():
            print(f"{k}: {v['diff']:+.3f} [{v['lo']:+.3f}, {v['hi']:+.3f}]")
        return
    if a.smollm2:
        r = real_arm(a)
        d = r["after_vs_before"]
        print(f"SmolLM2 ({r['world']}): held-out reward {r['before']['mean']:+.3f} -> {r['after']['mean']:+.3f}, "
              f"after - before {d['diff']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]; SFT {r['sft_seconds']:.0f} s, "
              f"RL {r['rl_seconds']:.0f} s ({r['interactions']} user turns)")
        return
    res_path = a.out / "results.json"
    results: dict[str, Any] = json.loads(res_path.read_text()) if res_path.exists() else {}
    results["config"] = vars(a) | {"m1": str(a.m1), "out": str(a.out), "interactions_budget": interactions}
    for preset in a.worlds:
        arms = results.setdefault(preset, {})
        ev = results.setdefault(f"{preset}_eval", {})
        if "M1" not in ev:
            r = evaluate(a.m1, preset, held_out, a.eval_turns, a.seed)
            ev["M1"] = {"rewards": r, "mean": float(np.mean(r))}
        for arm in a.arms:
            if arm in arms and "eval_mean" in arms[arm]:
                continue
            out = a.out / preset / arm
            print(f"[{preset}] {arm} ...", flush=True)
            info = run_rl(arm, preset, a.m1, seeds_file, out, a) if arm in ("state", "token") else \
                run_search_dpo(arm, preset, a.m1, seeds_file, n_search, out, a)
            r = evaluate(Path(info["model"]), preset, held_out, a.eval_turns, a.seed)
            info.update(rewards=r, eval_mean=float(np.mean(r)), vs_m1=paired(r, ev["M1"]["rewards"]))
            arms[arm] = info
            res_path.write_text(json.dumps(results, indent=1))
            print(f"[{preset}] {arm}: held-out reward {info['eval_mean']:+.3f} (M1 {ev['M1']['mean']:+.3f}), "
                  f"vs M1 {info['vs_m1']['diff']:+.3f} [{info['vs_m1']['lo']:+.3f}, {info['vs_m1']['hi']:+.3f}], "
                  f"{info['seconds']:.0f} s", flush=True)
        done = {k: v for k, v in arms.items() if "rewards" in v}
        if "state" in done:
            arms_cmp = results.setdefault(f"{preset}_state_vs", {})
            for other in ("token", "search_dpo", "latent_dpo"):
                if other in done:
                    arms_cmp[other] = paired(done["state"]["rewards"], done[other]["rewards"])
    res_path.write_text(json.dumps(results, indent=1))
    plot(results, a.out / "reward_vs_interactions.png")
    print(table(results))


def table(results: dict[str, Any]) -> str:
    lines = ["| world | arm | user turns | held-out reward | vs M1 [95% CI] | state vs this arm [95% CI] |",
             "|---|---|---|---|---|---|"]
    for preset in WORLDS:
        if preset not in results:
            continue
        m1 = results[f"{preset}_eval"]["M1"]["mean"]
        lines.append(f"| {preset} | M1 | - | {m1:+.3f} | - | - |")
        for arm, r in results[preset].items():
            if "eval_mean" not in r:
                continue
            v = r["vs_m1"]
            s = results.get(f"{preset}_state_vs", {}).get(arm)
            sv = f"{s['diff']:+.3f} [{s['lo']:+.3f}, {s['hi']:+.3f}]" if s else "-"
            lines.append(f"| {preset} | {arm} | {r['interactions']} | {r['eval_mean']:+.3f} | "
                         f"{v['diff']:+.3f} [{v['lo']:+.3f}, {v['hi']:+.3f}] | {sv} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

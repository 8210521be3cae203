"""DPO step time through ``train_dpo`` on a locally built random model (throughput does not depend on weights).

Pairs are synthetic SAC turns of varied length (prompt 1-3 turns, chosen/rejected one assistant turn
each). Reported: steady-state seconds per optimizer step and pairs/s (time between the first and the
last logged step, so the first step's warm-up is left out), median over ``--repeats`` runs.

    .venv/bin/python benchmarks/bench_dpo.py --model tiny --steps 20
    .venv/bin/python benchmarks/bench_dpo.py --model-path smollm2-135m --method lora --steps 5 --batch-size 2
    python benchmarks/bench_dpo.py --model 500m --device cuda --steps 20 --batch-size 8
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).parent))

from bench_sft import SIZES


def make_pairs(path: Path, n: int, seed: int) -> Path:
    from sage_dialog.core import sac
    from sage_dialog.core.schema import Tags
    from sage_dialog.sandbox.tiny_model import _WORDS

    rng = random.Random(seed)
    words = [w for w in _WORDS if w not in ("null", "none")]

    def sentence(lo: int, hi: int) -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(lo, hi))).capitalize() + "."

    def turn() -> str:
        return sac.render_turn(sentence(4, 50), state=Tags(motivation=rng.choice(words), emotion=rng.choice(words)),
                               action=Tags(motivation=rng.choice(words), emotion=rng.choice(words)))

    with path.open("w", encoding="utf-8") as fh:
        for _ in range(n):
            prompt = []
            for i in range(rng.randint(1, 3)):
                if i:
                    prompt.append({"role": "assistant", "content": turn()})
                prompt.append({"role": "user", "content": sentence(4, 30)})
            fh.write(json.dumps({"prompt": prompt, "chosen": [{"role": "assistant", "content": turn()}],
                                 "rejected": [{"role": "assistant", "content": turn()}]}) + "\n")
    return path


def run_once(model_dir: Path, data: Path, out: Path, args: argparse.Namespace) -> dict:
    """One ``train_dpo`` run; steady-state seconds per step and pairs/s from its log history."""
    from sage_dialog.core.config import load_config
    from sage_dialog.train.config import DPORunConfig
    from sage_dialog.train.dpo import train_dpo

    overrides = [
        f"model.name_or_path={model_dir}", f"data.train={data}", f"output_dir={out}", f"adapter.method={args.method}",
        f"train.max_steps={args.steps}", f"train.batch_size={args.batch_size}", f"data.max_length={args.max_length}",
        "train.save_steps=100000", "train.logging_steps=1", f"train.device={args.device}",
        "train.lr_scheduler=constant", "train.learning_rate=1e-6",
    ]
    if args.device == "cuda":
        overrides += ["train.precision=bf16", "train.gradient_checkpointing=false"]
    train_dpo(load_config(DPORunConfig, None, overrides))
    summary = json.loads((out / "training_summary.json").read_text())
    logs = [h for h in summary["log_history"] if "loss" in h and "train_runtime" in h]
    if len(logs) >= 2:
        dt = float(logs[-1]["train_runtime"]) - float(logs[0]["train_runtime"])
        steps = logs[-1].get("step", len(logs)) - logs[0].get("step", 1)
        return {"s_per_step": dt / max(steps, 1), "pairs_per_s": steps * args.batch_size / dt if dt else 0.0}
    runtime = float(summary.get("runtime_s") or summary.get("train_runtime") or 0.0)
    return {"s_per_step": runtime / args.steps, "pairs_per_s": args.steps * args.batch_size / runtime if runtime else 0.0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", choices=sorted(SIZES))
    ap.add_argument("--model-path", help="a real model (folder, .gguf or smollm2-135m) instead of --model")
    ap.add_argument("--method", default="full", choices=["full", "lora"])
    ap.add_argument("--data", type=Path, help="preference pairs (prompt/chosen/rejected JSONL) instead of synthetic")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    import transformers

    from sage_dialog.sandbox.tiny_model import build_tiny_model, default_corpus

    transformers.logging.set_verbosity_error()
    with tempfile.TemporaryDirectory(prefix="bench-dpo-") as tmp:
        t = Path(tmp)
        data = args.data or make_pairs(t / "pairs.jsonl", max(200, args.steps * args.batch_size), seed=0)
        if args.model_path:
            from sage_dialog.backends.gguf import resolve_model

            model_dir = Path(resolve_model(args.model_path))
        else:
            model_dir = build_tiny_model(t / "model", default_corpus(), max_positions=max(1024, args.max_length),
                                         **SIZES[args.model])
        runs = [run_once(model_dir, data, t / f"out-{r}", args) for r in range(args.repeats)]
    row = {"model": args.model_path or args.model, "method": args.method, "device": args.device, "batch_size": args.batch_size, "steps": args.steps,
           "s_per_step_median": round(statistics.median(r["s_per_step"] for r in runs), 4),
           "pairs_per_s_median": round(statistics.median(r["pairs_per_s"] for r in runs), 2),
           "load_avg": round(os.getloadavg()[0], 1)}
    print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(row, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

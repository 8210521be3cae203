"""SFT at the quickstart's settings: one batch of 4 against micro-batches with gradient accumulation.

The quickstart trains LoRA (r=16, every linear layer) on ~100 chitchat dialogs of 4-6 turns with 4
dialogs per optimizer step. ``batch_size=4, grad_accum=1`` pads each batch to its longest dialog and
holds the activations of all four at once; ``batch_size=1, grad_accum=4`` takes the same four dialogs
per optimizer step (same sampler order, loss averaged over the same tokens) one at a time: no padding,
a quarter of the activations. Times are per optimizer step (the first step left out, it warms up),
peak RSS is the training's own (reset at its start), and the final losses are printed to show the
optimisation is the same.

Data: the first ``--dialogs`` chitchat dialogs as the quickstart imports them, with SAC tag blocks of
the real shape (random labels of the quickstart's label sets: token lengths as in its ``mix``).

    .venv/bin/python benchmarks/bench_sft_microbatch.py --steps 4 --threads 1 --shapes 4x1 1x4
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def make_data(out: Path, n: int) -> Path:
    """Chitchat dialogs as SAC training records (messages JSONL), tags of the real shape."""
    from sage_dialog.core import sac
    from sage_dialog.core.io import read_jsonl
    from sage_dialog.core.schema import Dialog, Tags
    from sage_dialog.formats.corpora import import_corpus
    from sage_dialog.labels import load_label_set

    import_corpus("chitchat", None, out / "dialogs.jsonl", limit=n, min_turns=4, max_turns=6)
    mot, emo = load_label_set("chitchat_motivations"), load_label_set("chitchat_emotions")
    rng = random.Random(0)
    with (out / "train.jsonl").open("w", encoding="utf-8") as f:
        for d in read_jsonl(out / "dialogs.jsonl", Dialog):
            msgs = []
            for i, t in enumerate(d.turns):
                if t.role == "assistant" and i > 0:
                    state = Tags(motivation=rng.choice(mot), emotion=rng.choice(emo), topics=[])
                    action = Tags(motivation=rng.choice(mot), emotion=rng.choice(emo), topics=[])
                    msgs.append({"role": "assistant", "content": sac.render_turn(t.text, state=state, action=action)})
                else:
                    msgs.append({"role": t.role, "content": t.text})
            f.write(json.dumps({"messages": msgs}) + "\n")
    return out / "train.jsonl"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--dialogs", type=int, default=100)
    ap.add_argument("--steps", type=int, default=4, help="optimizer steps per shape")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--shapes", nargs="+", default=["4x1", "1x4"], help="BATCHxACCUM, e.g. 4x1 2x2 1x4")
    args = ap.parse_args()

    from sage_dialog.core.io import read_json
    from sage_dialog.core.rss import PeakRSS
    from sage_dialog.train.config import SFTRunConfig
    from sage_dialog.train.sft import train_sft
    from sage_dialog.train.summary import SUMMARY_FILE

    tmp = Path(tempfile.mkdtemp(prefix="bench-sft-mb-"))
    data = make_data(tmp, args.dialogs)
    results = []
    for shape in args.shapes:
        bs, acc = (int(x) for x in shape.split("x"))
        cfg = SFTRunConfig.model_validate({
            "model": {"name_or_path": args.model},
            "adapter": {"method": "lora", "r": 16, "alpha": 32, "dropout": 0.05,
                        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]},
            "data": {"train": str(data), "max_length": 512, "loss_on": "turn"},
            "train": {"max_steps": args.steps, "learning_rate": 1e-3, "batch_size": bs, "grad_accum": acc,
                      "save_steps": None, "logging_steps": 1},
            "output_dir": str(tmp / f"out-{shape}"), "threads": args.threads})
        peak = PeakRSS()
        c0, t0 = time.process_time(), time.perf_counter()
        with peak:
            out = train_sft(cfg)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        s = read_json(out / SUMMARY_FILE)
        steps = [h for h in s.get("log_history", []) if "loss" in h]
        results.append({"shape": shape, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
                        "losses": [round(h["loss"], 4) for h in steps], **peak.result(),
                        "tokens_per_s": s.get("tokens_per_s"), "load": os.getloadavg()[0]})
        print(json.dumps(results[-1]), flush=True)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

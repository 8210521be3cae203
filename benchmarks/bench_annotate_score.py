"""Score-mode annotation (the quickstart's annotate stage) with and without prompt-prefix reuse on ``hf:``.

The annotator scores each turn's motivation, then its emotion: two prompts that share the message
and differ from the question on. ``share_prompt`` (default on) reads the second prompt's common
prefix from a copy of the first one's KV cache. Both paths annotate the same dialogs (the first
``--dialogs`` of a chitchat import, 4-6 turns each); runs are interleaved and the chosen labels are
checked equal. Wall time and CPU time are both reported: on a shared machine CPU time is the steadier.

    .venv/bin/python benchmarks/bench_annotate_score.py --dialogs 6 --repeats 2 --threads 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--dialogs", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from sage_dialog.backends.base import BackendConfig, load_backend
    from sage_dialog.core.io import read_jsonl
    from sage_dialog.core.schema import Dialog
    from sage_dialog.formats.corpora import import_corpus
    from sage_dialog.roles.annotator import LabelSets, ScoringAnnotator

    tmp = Path(tempfile.mkdtemp(prefix="bench-annotate-"))
    import_corpus("chitchat", None, tmp / "dialogs.jsonl", seeds_out=tmp / "seeds.txt", limit=args.dialogs,
                  min_turns=4, max_turns=6)
    dialogs = list(read_jsonl(tmp / "dialogs.jsonl", Dialog))
    labels = LabelSets.from_spec({"motivation": "chitchat_motivations", "emotion": "chitchat_emotions"})
    backends = {name: load_backend(BackendConfig(spec=f"hf:{args.model}", options={"share_prompt": share,
                                                                                   "share_base": False}))
                for name, share in (("prefix reuse", True), ("no reuse", False))}
    wall: dict[str, list[float]] = {n: [] for n in backends}
    cpu: dict[str, list[float]] = {n: [] for n in backends}
    labels_of: dict[str, list[object]] = {}
    for _ in range(args.repeats):
        for name, be in backends.items():
            ann = ScoringAnnotator(be, labels)
            c0, t0 = time.process_time(), time.perf_counter()
            res = asyncio.run(ann.annotate(dialogs))
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
            labels_of[name] = [[t.model_dump() for t in (r.tags or [])] for r in res]
    turns = sum(len(d.turns) for d in dialogs)
    out = {"dialogs": len(dialogs), "turns": turns, "threads": args.threads, "load_before": os.getloadavg()[0],
           "same_labels": labels_of["prefix reuse"] == labels_of["no reuse"]}
    for name in backends:
        out[name] = {"wall_s_median": statistics.median(wall[name]), "wall_s": wall[name],
                     "cpu_s_median": statistics.median(cpu[name]), "cpu_s": cpu[name]}
    out["speedup_wall"] = out["no reuse"]["wall_s_median"] / out["prefix reuse"]["wall_s_median"]  # type: ignore[index]
    out["speedup_cpu"] = out["no reuse"]["cpu_s_median"] / out["prefix reuse"]["cpu_s_median"]  # type: ignore[index]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

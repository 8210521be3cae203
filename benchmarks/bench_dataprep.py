"""Data preparation throughput: mixing, answer validation, and annotation batching on the tiny model.

Run:  .venv/bin/python benchmarks/bench_dataprep.py --dialogs 20000 --repeat 3 --annotate 16

Prints one line per measurement (median seconds over the repeats):
* ``mix``: `mix.run` on a synthetic data spec of two ShareGPT files (chained SAC dialogs, 8 turns),
  with and without blending, dialogs/s;
* ``check_answer``: validating one well-formed annotator answer per dialog (the stage's own CPU cost
  per dialog, model excluded), dialogs/s;
* ``annotate tiny``: `LLMAnnotator` on the in-process transformers backend with the tiny local model
  (garbage answers, one attempt, 24 tokens per turn), handing the backend 1 dialog at a time versus
  the whole list, so the backend can batch: dialogs/s and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sage_dialog.core import sac
from sage_dialog.core.schema import Dialog, Tags, Turn
from sage_dialog.roles.annotator import LabelSets, LLMAnnotator, check_answer
from sage_dialog.stages import mix


def make_records(n: int, tag: str, turns: int = 8) -> list[dict]:
    out = []
    for i in range(n):
        conv = []
        for j in range(turns):
            if j % 2 == 0:
                conv.append({"from": "human", "value": f"User line {j} of {tag} dialog {i}, about work and family."})
            else:
                conv.append({"from": "gpt", "value": sac.render_turn(
                    f"Reply {j}: that sounds hard; what happened next?",
                    state=Tags(motivation="venting", emotion="sad", topics=["work"]),
                    action=Tags(motivation="comfort", emotion="calm", topics=["work", "family"]))})
        out.append({"id": f"{tag}_{i}", "conversations": conv})
    return out


def median_time(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_mix(n: int, repeat: int, tmp: Path) -> None:
    half = n // 2
    (tmp / "a.json").write_text(json.dumps(make_records(half, "a")))
    (tmp / "b.json").write_text(json.dumps(make_records(n - half, "b")))
    spec = tmp / "spec.json"
    spec.write_text(json.dumps({"a.json": {"prompt": "", "size": half}, "b.json": {"prompt": "[x] ", "size": n}}))
    for k in (0, 2):
        settings, out = mix.Settings(blend=k, valid_fraction=0.05), tmp / f"out{k}"
        t = median_time(lambda s=settings, o=out: mix.run(s, inputs=mix.Inputs(spec=spec), out=o), repeat)
        print(f"mix blend={k}: {n} dialogs  median {t:.2f} s  {n / t:,.0f} dialogs/s")


def bench_check(n: int, repeat: int) -> None:
    d = Dialog(id="x", turns=[Turn(role="user" if j % 2 == 0 else "assistant", text=f"turn {j}") for j in range(8)])
    ans = json.dumps({"turns": [{"index": j, "motivation": "venting", "emotion": "sad", "topics": ["work"]}
                                for j in range(8)]})
    labels = LabelSets.from_spec({"assistant.motivation": "esconv_strategies"})
    ans_closed = ans.replace('"venting"', '"reflection of feeling"')
    for name, lab, a in (("open", LabelSets(), ans), ("closed+map", labels, ans_closed)):
        t = median_time(lambda lab=lab, a=a: [check_answer(a, d, lab, tidy=False) for _ in range(n)], repeat)
        print(f"check_answer {name}: {n} dialogs  median {t:.2f} s  {n / t:,.0f} dialogs/s")


def bench_annotate(n: int, repeat: int, tmp: Path) -> None:
    from sage_dialog.backends.hf import HFBackend
    from sage_dialog.sandbox.tiny_model import build_tiny_model

    model = build_tiny_model(tmp / "tiny")
    backend = HFBackend(str(model))
    ann = LLMAnnotator(backend, max_attempts=1, max_tokens_per_turn=24)
    dialogs = [Dialog(id=f"d{i}", turns=[Turn(role="user", text=f"I failed exam number {i}."),
                                          Turn(role="assistant", text="That is rough, want to talk?")])
               for i in range(n)]

    async def one_by_one() -> None:
        for d in dialogs:
            await ann.annotate([d])

    async def whole() -> None:
        await ann.annotate(dialogs)

    asyncio.run(whole())  # warm-up
    t1 = median_time(lambda: asyncio.run(one_by_one()), repeat)
    tn = median_time(lambda: asyncio.run(whole()), repeat)
    print(f"annotate tiny, 1 dialog per call: {n} dialogs  median {t1:.2f} s  {n / t1:.1f} dialogs/s")
    print(f"annotate tiny, whole list:        {n} dialogs  median {tn:.2f} s  {n / tn:.1f} dialogs/s  "
          f"({t1 / tn:.1f}x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dialogs", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--annotate", type=int, default=16, help="dialogs for the tiny-model batching measurement (0: skip)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        bench_mix(args.dialogs, args.repeat, tmp)
        bench_check(args.dialogs, args.repeat)
        if args.annotate:
            bench_annotate(args.annotate, args.repeat, tmp)


if __name__ == "__main__":
    main()

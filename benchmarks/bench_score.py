"""Option scoring on the ``hf:`` backend: the prompt read once (``score()``) vs once per option.

``score()`` is what closed-label annotation (``annotate --mode score``) and the judges' choice mode
call: the log-likelihood of each option after a prompt. The reference is the obvious way, which
the backend used before: one forward pass over prompt + option for every option (batched, right
padded). Both get the same label requests (a chat message to label with one of 8 motivations, as
the quickstart's annotator asks); the runs are interleaved and both results are checked equal.

    .venv/bin/python benchmarks/bench_score.py --model smollm2-135m --requests 20 --repeats 2 --threads 1
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

LABELS = ["greeting", "asking", "answering", "agreeing", "disagreeing", "joking", "complimenting", "sharing"]
MESSAGES = ["Hey, how are you doing today?", "I just got back from a trip to Spain, it was great.",
            "What kind of music do you like?", "Haha that's hilarious", "I don't think so, pizza is overrated."]


def per_option(backend: object, prompts: list[str], options: list[list[str]]) -> list[list[float]]:
    """The reference: one pass over prompt + option per option, right padded, in batches."""
    import torch

    tok, lm = backend.tokenizer, backend.lm  # type: ignore[attr-defined]
    out = []
    for prompt, opts in zip(prompts, options, strict=True):
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        seqs = [p + tok(o, add_special_tokens=False)["input_ids"] for o in opts]
        width = max(len(s) for s in seqs)
        ids = torch.tensor([s + [tok.pad_token_id] * (width - len(s)) for s in seqs])
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
        with torch.inference_mode():
            logp = torch.log_softmax(lm(input_ids=ids, attention_mask=mask).logits.float()[:, :-1], -1)
        tgt = torch.gather(logp, 2, ids[:, 1:].unsqueeze(2)).squeeze(2)
        out.append([float(tgt[i, len(p) - 1: len(s) - 1].sum()) for i, s in enumerate(seqs)])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m", help="model folder, .gguf file or smollm2-135m")
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = ap.parse_args()

    import torch

    from sage_dialog.backends import ScoreRequest, load_backend
    from sage_dialog.backends.prompting import render_prompt

    torch.set_num_threads(args.threads)
    backend = load_backend(f"hf:{args.model}")
    reqs = [ScoreRequest([{"role": "system", "content": "You label chat messages."},
                          {"role": "user", "content": f'(after: "Hello there") The user says: '
                           f'"{MESSAGES[i % len(MESSAGES)]}"\nWhich motivation fits this message best? '
                           f'One of: {", ".join(LABELS)}.'}],
                         [f" {x}" for x in LABELS], prefill="The motivation is") for i in range(args.requests)]
    prompts = [render_prompt(backend.tokenizer, r.messages, r.prefill) for r in reqs]  # type: ignore[attr-defined]
    times: dict[str, list[float]] = {"per-option": [], "score()": []}
    for _ in range(args.repeats):
        t = time.perf_counter()
        ref = per_option(backend, prompts, [list(r.options) for r in reqs])
        times["per-option"].append(time.perf_counter() - t)
        t = time.perf_counter()
        got = [r.logprobs for r in asyncio.run(backend.score(reqs))]
        times["score()"].append(time.perf_counter() - t)
        worst = max(abs(a - b) for x, y in zip(ref, got, strict=True) for a, b in zip(x, y, strict=True))
        assert worst < 1e-3, f"scores differ by {worst}"
    ref_s, ours_s = statistics.median(times["per-option"]), statistics.median(times["score()"])
    print(f"{args.requests} requests x {len(LABELS)} options, {args.threads} thread(s), "
          f"load avg {os.getloadavg()[0]:.1f}")
    for k, v in times.items():
        print(f"  {k:10} median {statistics.median(v):6.2f} s  runs {[round(x, 2) for x in v]}")
    print(f"  speed-up {ref_s / ours_s:.2f}x (same log-likelihoods, max difference checked < 1e-3)")


if __name__ == "__main__":
    main()

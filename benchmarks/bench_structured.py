"""Per-token cost of grammar-constrained decoding (JSON schema -> token mask) with three libraries.

For each installed library (xgrammar, outlines-core, lm-format-enforcer) and each tokenizer (the
random tiny model's ~0.5k vocabulary and SmolLM2-135M's 49k), the annotator's answer schema for a
4-turn dialog with closed label sets is compiled once (``setup``), then ``--samples`` answers are
sampled from random logits under the mask; ``per token`` is the mean wall time per step of
computing the allowed set/mask and applying it to the logits (no model forward: that is the
overhead the library adds). ``compact`` says whether the answers had no free whitespace.

    PYTHONPATH=src python benchmarks/bench_structured.py [--samples 5] [--smollm2 DIR] [--e2e]

``--e2e`` also times the ``hf`` backend end to end (model forward included) on the same requests
with the schema enforced (xgrammar) and ignored (``constrained=False``): ms per generated token.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch


def schema() -> dict[str, Any]:
    from sage_dialog.roles.annotator import LabelSets, answer_schema

    sets = {"motivation": ["venting", "asking", "sharing", "other"], "emotion": ["sad", "happy", "neutral"],
            "topics": ["work", "school", "family", "health"]}
    labels = LabelSets({(r, f): v for r in ("user", "assistant") for f, v in sets.items()})
    return answer_schema(labels, tidy=False)


def byte_vocab(tok: Any) -> tuple[dict[int, bytes], set[int]]:
    """Token id -> the bytes it decodes to (byte-level BPE), and the special ids."""
    # GPT-2's byte <-> printable-unicode table, which byte-level BPE vocabularies are written in
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    dec = {chr(c): b for b, c in zip(bs, cs, strict=True)}
    special = set(tok.all_special_ids)
    out = {}
    for t, i in tok.get_vocab().items():
        if i in special:
            continue
        try:
            out[i] = bytes(dec[c] for c in t)
        except KeyError:  # an added token that is not byte-level
            out[i] = t.encode()
    return out, special


class XGrammar:
    name = "xgrammar"

    def __init__(self, tok: Any, vocab_size: int, sch: dict[str, Any]):
        import xgrammar as xgr

        self.xgr = xgr
        info = xgr.TokenizerInfo.from_huggingface(tok, vocab_size=vocab_size)
        self.ctx = xgr.GrammarCompiler(info).compile_json_schema(
            json.dumps(sch), any_whitespace=False, separators=(",", ":")
        )
        self.mask = xgr.allocate_token_bitmask(1, vocab_size)

    def start(self) -> None:
        self.m = self.xgr.GrammarMatcher(self.ctx)

    def apply(self, logits: torch.Tensor) -> None:
        self.m.fill_next_token_bitmask(self.mask)
        self.xgr.apply_token_bitmask_inplace(logits, self.mask)

    def accept(self, t: int) -> bool:
        assert self.m.accept_token(t)
        return self.m.is_terminated()


class Outlines:
    name = "outlines-core"

    def __init__(self, tok: Any, vocab_size: int, sch: dict[str, Any]):
        from outlines_core import Guide, Index, Vocabulary
        from outlines_core.json_schema import build_regex_from_schema

        self.Guide = Guide
        bv, _ = byte_vocab(tok)
        m: dict[bytes, list[int]] = {}
        for i, b in bv.items():
            m.setdefault(b, []).append(i)
        regex = build_regex_from_schema(json.dumps(sch), whitespace_pattern="")
        self.index = Index(regex, Vocabulary(tok.eos_token_id, m))
        self.eos = tok.eos_token_id
        from outlines_core.kernels import torch as k

        self.k = k
        self.mask = k.allocate_token_bitmask(vocab_size)

    def start(self) -> None:
        self.g = self.Guide(self.index)

    def apply(self, logits: torch.Tensor) -> None:
        # the library's own bitmask kernels (get_tokens() builds a Python list: ~50 ms at 49k vocab)
        self.k.fill_next_token_bitmask(self.g, self.mask)
        self.k.apply_token_bitmask_inplace(logits, self.mask)

    def accept(self, t: int) -> bool:
        if t == self.eos:
            return True
        self.g.advance(t)
        return False


class LMFE:
    name = "lm-format-enforcer"

    def __init__(self, tok: Any, vocab_size: int, sch: dict[str, Any]):
        from lmformatenforcer import CharacterLevelParserConfig, JsonSchemaParser, TokenEnforcer
        from lmformatenforcer.tokenenforcer import TokenEnforcerTokenizerData

        # its transformers integration does not import under transformers 5 (PreTrainedTokenizerBase
        # moved): the same tokenizer data built here, as lmformatenforcer/integrations/transformers.py does
        zero = tok.encode("0", add_special_tokens=False)[-1]
        special = set(tok.all_special_ids)
        regular = []
        for i in range(len(tok)):
            if i not in special:
                after0, alone = tok.decode([zero, i])[1:], tok.decode([i])
                regular.append((i, after0, len(after0) > len(alone)))
        self.td = TokenEnforcerTokenizerData(
            regular, lambda ids: tok.decode(ids).rstrip("\ufffd"), tok.eos_token_id, False, vocab_size
        )
        # closest it has to compact JSON: no run of whitespace (a single space is still allowed)
        self.parser = JsonSchemaParser(sch, config=CharacterLevelParserConfig(max_consecutive_whitespaces=1))
        self.TokenEnforcer = TokenEnforcer
        self.eos = tok.eos_token_id
        self.V = vocab_size

    def start(self) -> None:
        self.enf = self.TokenEnforcer(self.td, self.parser)
        self.seq: list[int] = []

    def apply(self, logits: torch.Tensor) -> None:
        allowed = torch.tensor(self.enf.get_allowed_tokens(self.seq).allowed_tokens, dtype=torch.long)
        keep = torch.full((self.V,), float("-inf"))
        keep[allowed] = 0.0
        logits += keep

    def accept(self, t: int) -> bool:
        self.seq.append(t)
        return t == self.eos


def run(lib_cls: Any, tok: Any, vocab_size: int, samples: int, max_steps: int = 400) -> dict[str, Any]:
    sch = schema()
    t0 = time.perf_counter()
    lib = lib_cls(tok, vocab_size, sch)
    setup = time.perf_counter() - t0
    gen = torch.Generator().manual_seed(0)
    step_times: list[float] = []
    texts = []
    for k in range(samples + 1):  # sample 0 warms up (kernels compile on first use) and is not timed
        if k == 1:
            step_times.clear()
            texts.clear()
        lib.start()
        ids: list[int] = []
        for _ in range(max_steps):
            logits = torch.randn(1, vocab_size, generator=gen)
            t = time.perf_counter()
            lib.apply(logits[0] if lib_cls is LMFE else logits)
            step_times.append(time.perf_counter() - t)
            tid = int(torch.multinomial(torch.softmax(logits[0], -1), 1, generator=gen))
            ids.append(tid)
            if lib.accept(tid):
                break
        texts.append(tok.decode([i for i in ids if i != tok.eos_token_id]))
    valid = 0
    for x in texts:
        try:
            json.loads(x)
            valid += 1
        except ValueError:
            pass
    return {
        "library": lib_cls.name,
        "setup_s": round(setup, 3),
        "per_token_ms": round(1000 * statistics.mean(step_times), 3),
        "tokens": len(step_times),
        "valid_json": f"{valid}/{samples}",
        "compact": all(not any(c in x for c in " \t\r\n") or x.count(" ") <= 0 for x in texts),
        "example": texts[0][:80],
    }


def e2e(path: Path, label: str, rows: int = 4, max_tokens: int = 48, reps: int = 2) -> None:
    """ms per generated token through the hf backend, schema enforced vs ignored."""
    import asyncio

    from sage_dialog.backends import ChatRequest, SamplingParams, load_backend

    msgs = [{"role": "system", "content": "Label the dialog. Answer JSON only."},
            {"role": "user", "content": "[0] user: I failed my exam.\n[1] assistant: That's rough."}]
    sch = schema()
    for constrained in (False, True):
        b = load_backend(f"hf:{path}", constrained=constrained)
        sp = SamplingParams(temperature=1.0, max_tokens=max_tokens)
        req = ChatRequest(msgs, n=rows, sampling=sp, json_schema=sch)
        asyncio.run(b.generate([req]))  # warm-up (and grammar compile)
        t0 = time.perf_counter()
        toks = 0
        for _ in range(reps):
            [r] = asyncio.run(b.generate([req]))
            toks += sum(c.tokens_out for c in r.completions)
        dt = time.perf_counter() - t0
        print(f"| {label} | hf e2e, batch {rows} | {'xgrammar' if constrained else 'none'} | "
              f"{1000 * dt / max(toks, 1):.2f} ms/token | {toks} tokens |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument("--smollm2", default=None, help="SmolLM2 model folder (default: convert the GGUF)")
    ap.add_argument("--libs", default="xgrammar,outlines-core,lm-format-enforcer")
    ap.add_argument("--e2e", action="store_true", help="also time the hf backend end to end")
    args = ap.parse_args()
    from transformers import AutoConfig, AutoTokenizer

    from sage_dialog.sandbox.tiny_model import build_tiny_model

    tmp = Path(tempfile.mkdtemp())
    tiny = build_tiny_model(tmp / "tiny")
    if args.smollm2:
        smol = Path(args.smollm2)
    else:
        import sys

        sys.path.insert(0, str(Path(__file__).parent))
        from smollm2_local import smollm2_folder

        smol = smollm2_folder()
    libs = {c.name: c for c in (XGrammar, Outlines, LMFE)}
    print(f"load: {os.getloadavg()}")
    print("| tokenizer | vocab | library | setup s | per token ms | tokens | valid JSON | compact |")
    print("|---|---|---|---|---|---|---|---|")
    for label, path in (("tiny", tiny), ("SmolLM2-135M", smol)):
        tok = AutoTokenizer.from_pretrained(path)
        V = AutoConfig.from_pretrained(path).vocab_size
        for name in args.libs.split(","):
            r = run(libs[name], tok, V, args.samples)
            print(
                f"| {label} | {V} | {r['library']} | {r['setup_s']} | {r['per_token_ms']} | {r['tokens']} | "
                f"{r['valid_json']} | {r['compact']} |",
                flush=True,
            )
            print(f"  example: {r['example']!r}", flush=True)
    if args.e2e:
        print("| model | what | constraint | per token | tokens |\n|---|---|---|---|---|")
        for label, path in (("tiny", tiny), ("SmolLM2-135M", smol)):
            e2e(path, label)


if __name__ == "__main__":
    main()

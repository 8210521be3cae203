"""One base in memory: hf: specs of LoRA adapters on the same base share one module and switch adapters
per batch, with the outputs of separately merged models (greedy decoding, same prompts)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sage_dialog.backends import ChatRequest, SamplingParams, ScoreRequest, load_backend, shared_base
from sage_dialog.backends.hf import HFBackend

PROMPTS = [
    [{"role": "user", "content": "i failed my exam today"}],
    [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "my dog is sick"}],
    [{"role": "user", "content": "what a lovely day it is"}],
]
GREEDY = SamplingParams(temperature=0.0, max_tokens=12)


def _random_lora(model_dir: Path, out: Path, seed: int, targets: list[str]) -> Path:
    """A LoRA adapter of ``model_dir`` with random (non-zero) weights, saved to ``out``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False))
    torch.manual_seed(seed)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_" in n:
                p.normal_(0, 0.3)
    peft_model.save_pretrained(out)
    # as training saves it: the adapter folder carries its tokenizer and template
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def adapters(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two LoRA adapters on the tiny model (SFT-like), a third trained on the first's merged model (DPO-like),
    and the merged models of all three."""
    from sage_dialog.train.export import export_model

    root = tmp_path_factory.mktemp("adapters")
    a1 = _random_lora(tiny_model, root / "sft" / "train", 1, ["q_proj", "v_proj", "gate_proj", "down_proj"])
    a2 = _random_lora(tiny_model, root / "other" / "train", 2, ["q_proj", "k_proj", "o_proj"])
    m1 = export_model(a1, root / "sft" / "model")
    m2 = export_model(a2, root / "other" / "model")
    a3 = _random_lora(m1, root / "dpo" / "train", 3, ["q_proj", "v_proj"])
    m3 = export_model(a3, root / "dpo" / "model")
    return {"a1": a1, "a2": a2, "a3": a3, "m1": m1, "m2": m2, "m3": m3}


async def _texts(backends: list[HFBackend]) -> list[list[str]]:
    """Greedy replies of every backend, all backends at once (their batches interleave on the shared lock)."""
    reqs = [ChatRequest(p, n=1, sampling=GREEDY) for p in PROMPTS]
    results = await asyncio.gather(*(b.generate(reqs) for b in backends))
    return [[r.completions[0].text for r in res] for res in results]


def test_adapter_specs_on_one_base_load_it_once_and_match_merged_models(tiny_model, adapters):
    before = shared_base.loaded()
    shared = [load_backend(f"hf:{tiny_model}")] + [load_backend(f"hf:{adapters[k]}") for k in ("a1", "a2", "a3")]
    assert all(isinstance(b, HFBackend) for b in shared)
    assert shared_base.loaded() <= before + 1  # the tiny base once (or already held by another test)
    base_module = shared[0].lm
    assert all(b.lm is base_module for b in shared)  # one module; the DPO-like chain runs base + a1 + a3
    assert len(shared[3]._active) == 2

    merged = [load_backend(f"hf:{tiny_model}", share_base=False)] + [
        load_backend(f"hf:{adapters[k]}", share_base=False) for k in ("m1", "m2", "m3")]
    assert len({id(b.lm) for b in merged}) == 4 and base_module not in [b.lm for b in merged]

    got = asyncio.run(_texts(shared))  # type: ignore[arg-type]
    want = asyncio.run(_texts(merged))  # type: ignore[arg-type]
    assert got == want
    assert len({tuple(t) for t in want}) == 4  # the adapters do change the replies: the check can fail

    score = [ScoreRequest(PROMPTS[1], ["yes", "no", "maybe"])]
    for s, m in zip(shared, merged, strict=True):
        assert asyncio.run(s.score(score))[0].logprobs == pytest.approx(asyncio.run(m.score(score))[0].logprobs,
                                                                          abs=1e-4)
    for b in [*shared, *merged]:
        asyncio.run(b.aclose())


def test_a_merged_folder_asked_for_directly_stays_a_merged_model(adapters):
    """merged_from.json is followed only below an adapter: hf:<stage>/model loads the merged weights."""
    chain = shared_base.resolve_chain(str(adapters["m1"]))
    assert chain.adapters == () and chain.base == str(adapters["m1"])
    dpo = shared_base.resolve_chain(str(adapters["a3"]))
    assert dpo.adapters == (str(adapters["a1"].resolve()), str(adapters["a3"].resolve()))

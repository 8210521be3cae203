"""The response cache keys what determines the output, so it cannot answer from a stale entry:
a changed chat template, adapter, backend option or weights under an existing ``cache.sqlite``
gives new answers; an unchanged rerun still costs no model call; token logprobs survive it."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from sage_dialog.backends import ChatRequest, SamplingParams, ScoreRequest, load_backend
from sage_dialog.backends.cache import CachedBackend, path_fingerprint
from sage_dialog.backends.ledger import Ledger

MSGS = [{"role": "user", "content": "i lost my job today"}]
SP = SamplingParams(max_tokens=6, seed=5)


def _gen(b: Any, **kw: Any) -> Any:
    return asyncio.run(b.generate([ChatRequest(MSGS, n=2, sampling=SP, **kw)]))[0]


def _cached(inner: Any, path: Path) -> tuple[CachedBackend, Ledger]:
    ledger = Ledger("inner")
    return CachedBackend(ledger.track(inner), path), ledger


@pytest.fixture
def model_copy(tiny_model: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "model"
    shutil.copytree(tiny_model, dst)
    return dst


def test_a_new_chat_template_is_a_new_key(model_copy: Path, tmp_path: Path) -> None:
    db = tmp_path / "c.sqlite"
    b, ledger = _cached(load_backend(f"hf:{model_copy}"), db)
    first = _gen(b)
    assert not any(c.cached for c in first.completions)
    assert all(c.cached for c in _gen(b).completions)  # unchanged: zero calls
    assert ledger.usage[b.name].samples == 2
    # the template changed in memory (what a --chat-template option or new rendering code does):
    # same model folder, same identity, but the prompt the model reads differs
    tok = b.inner.inner.tokenizer  # type: ignore[attr-defined]
    tok.chat_template = tok.chat_template.replace("<|im_start|>assistant\\n", "<|im_start|>assistant\\n> ")
    again = _gen(b)
    assert not any(c.cached for c in again.completions)
    assert ledger.usage[b.name].samples == 4
    # the template edited on disk: a new backend over the same cache file misses too
    tpl = model_copy / "chat_template.jinja"
    tpl.write_text(tpl.read_text().replace("<|im_start|>assistant\\n", "<|im_start|>assistant\\n>> "))
    c, ledger2 = _cached(load_backend(f"hf:{model_copy}"), db)
    assert not any(x.cached for x in _gen(c).completions)
    assert ledger2.usage[c.name].samples == 2


def test_a_retrained_adapter_is_a_new_key(tiny_model: Path, tmp_path: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    def save_adapter(seed: int) -> Path:
        base = AutoModelForCausalLM.from_pretrained(tiny_model)
        pm = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
        torch.manual_seed(seed)
        with torch.no_grad():
            for n, p in pm.named_parameters():
                if "lora_" in n:
                    p.normal_(0, 0.5)
        pm.save_pretrained(tmp_path / "adapter")  # the same path both times
        return tmp_path / "adapter"

    db = tmp_path / "c.sqlite"
    req = [ScoreRequest(MSGS, ["yes", "no"])]
    a, _ = _cached(load_backend(f"hf:{tiny_model}", adapter=str(save_adapter(0))), db)
    first = asyncio.run(a.score(req))[0]
    assert asyncio.run(a.score(req))[0].cached
    b, _ = _cached(load_backend(f"hf:{tiny_model}", adapter=str(save_adapter(1))), db)
    second = asyncio.run(b.score(req))[0]
    assert not second.cached and second.logprobs != pytest.approx(first.logprobs, abs=1e-5)


def test_a_backend_option_that_changes_outputs_is_a_new_key(tiny_model: Path, tmp_path: Path) -> None:
    db = tmp_path / "c.sqlite"
    a, _ = _cached(load_backend(f"hf:{tiny_model}"), db)
    _gen(a)
    b, ledger = _cached(load_backend(f"hf:{tiny_model}", dtype="bfloat16"), db)
    assert not any(c.cached for c in _gen(b).completions)
    assert ledger.usage[b.name].samples == 2
    # batching options do not change outputs: they share the entries
    c, ledger3 = _cached(load_backend(f"hf:{tiny_model}", batch_size=3), db)
    assert all(x.cached for x in _gen(c).completions) and not ledger3.usage


def test_logprobs_survive_the_cache(tiny_model: Path, tmp_path: Path) -> None:
    b, ledger = _cached(load_backend(f"hf:{tiny_model}"), tmp_path / "c.sqlite")
    assert b.supports_logprobs  # so serve's capability check passes through a cache
    fresh = _gen(b, logprobs=2)
    hit = _gen(b, logprobs=2)
    assert all(c.cached for c in hit.completions) and ledger.usage[b.name].samples == 2
    for f, h in zip(fresh.completions, hit.completions, strict=True):
        assert f.logprobs and h.logprobs == f.logprobs
        assert len(h.logprobs[0]["top_logprobs"]) == 2
    # a request without logprobs is another key (its entries carry none)
    assert all(c.logprobs is None for c in _gen(b).completions)


def test_weights_changed_in_the_middle_change_the_fingerprint(tmp_path: Path) -> None:
    d = tmp_path / "m"
    d.mkdir()
    w = d / "model.safetensors"
    data = bytearray(os.urandom(6 << 20))  # above the whole-file limit: hashed once, remembered
    w.write_bytes(bytes(data))
    a = path_fingerprint(d)
    assert path_fingerprint(d) == a
    data[3 << 20] ^= 0xFF  # neither the first nor the last MiB, same size
    w.write_bytes(bytes(data))
    os.utime(w, ns=(w.stat().st_atime_ns, w.stat().st_mtime_ns + 1_000_000))
    assert path_fingerprint(d) != a

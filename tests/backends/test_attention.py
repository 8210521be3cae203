"""The CPU grouped-query attention gives the same results as transformers' sdpa, without the KV copy."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from sage_dialog.backends import attention  # noqa: E402


def _gqa_llama(impl: str):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=97, hidden_size=96, intermediate_size=192, num_hidden_layers=2,
        num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=128,
    )
    cfg._attn_implementation = impl
    return transformers.LlamaForCausalLM(cfg).eval()


def _padded_batch():  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 97, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[0, :5] = 0  # left padding of different lengths, as the hf backend batches
    mask[1, :2] = 0
    return ids, mask


def test_masked_gqa_matches_sdpa_logits_and_greedy_tokens() -> None:
    name = attention.register()
    ref, ours = _gqa_llama("sdpa"), _gqa_llama(name)
    ours.load_state_dict(ref.state_dict())
    ids, mask = _padded_batch()
    with torch.no_grad():
        a = ref(input_ids=ids, attention_mask=mask).logits
        b = ours(input_ids=ids, attention_mask=mask).logits
        keep = mask.bool()
        assert torch.allclose(a[keep], b[keep], atol=1e-5)
        ga = ref.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=0)
        gb = ours.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert torch.equal(ga, gb)


def test_masked_gqa_skips_the_kv_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers.integrations import sdpa_attention

    calls = []
    real = sdpa_attention.repeat_kv
    monkeypatch.setattr(sdpa_attention, "repeat_kv", lambda *a: calls.append(1) or real(*a))
    ids, mask = _padded_batch()
    with torch.no_grad():
        _gqa_llama("sdpa")(input_ids=ids, attention_mask=mask)
        assert calls, "transformers' sdpa copies KV heads under a padding mask"
        calls.clear()
        _gqa_llama(attention.register())(input_ids=ids, attention_mask=mask)
    assert calls == []

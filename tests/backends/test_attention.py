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


def test_packed_row_is_attended_per_document_like_separate_sequences(monkeypatch: pytest.MonkeyPatch) -> None:
    """A padding-free packed row (TRL's collator: one row, position_ids reset per document,
    cu_seq_lens) gives each document the logits and gradients it has on its own, through the
    per-document path (not a mask over the whole row)."""
    name = attention.register()
    seen = []
    original = attention._varlen_forward

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(args[3].tolist())
        return original(*args, **kwargs)

    monkeypatch.setattr(attention, "_varlen_forward", spy)
    model = _gqa_llama(name)
    g = torch.Generator().manual_seed(2)
    docs = [torch.randint(3, 97, (n,), generator=g) for n in (7, 12, 4)]
    ids = torch.cat(docs)[None]
    pos = torch.cat([torch.arange(len(d)) for d in docs])[None]
    cu = torch.tensor([0, 7, 19, 23], dtype=torch.int32)
    packed = model(input_ids=ids, position_ids=pos, cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=12,
                   max_length_k=12).logits
    alone = torch.cat([model(input_ids=d[None]).logits for d in docs], dim=1)
    assert torch.allclose(packed, alone, atol=1e-5)
    assert seen and seen[0] == [0, 7, 19, 23] and len(seen) == 2  # both layers
    # the first document's loss does not depend on the later documents (no leak across the boundary)
    packed[0, :7].sum().backward()
    grad_packed = model.model.embed_tokens.weight.grad.clone()
    model.zero_grad()
    model(input_ids=docs[0][None]).logits.sum().backward()
    assert torch.allclose(grad_packed, model.model.embed_tokens.weight.grad, atol=1e-4)

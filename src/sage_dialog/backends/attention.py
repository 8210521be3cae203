"""Grouped-query attention without copying the KV heads on CPU (``attn_implementation="sage_sdpa"``).

transformers' ``sdpa`` attention expands the key/value heads with ``repeat_kv`` whenever a padding
mask is present, because its fused GPU kernels cannot take a mask together with GQA. Every batched
generation step has a padding mask, so on CPU that copy dominated: a profile of SmolLM2-135M
(9 query heads, 3 KV heads) put 64% of ``hf:`` generation time in ``repeat_kv``. torch's CPU
``scaled_dot_product_attention`` accepts a mask together with ``enable_gqa=True``, so on CPU this
attention passes the unexpanded heads; everywhere else it is transformers' ``sdpa`` unchanged.
Numerically it is the same attention (tests/backends/test_attention.py).
"""

from __future__ import annotations

from typing import Any

NAME = "sage_sdpa"
_registered = False


def gqa_sdpa_forward(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """transformers' sdpa attention, with masked GQA done by torch's kernel instead of ``repeat_kv`` on CPU."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    plain = (
        query.device.type != "cpu"
        or attention_mask is None  # stock sdpa already uses enable_gqa without a mask
        or getattr(module, "num_key_value_groups", 1) == 1
        or kwargs.get("position_bias") is not None
        or kwargs.get("cache") is not None
        or kwargs.get("output_attentions", False)
    )
    if plain:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal,
            **kwargs,
        )
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling, is_causal=False,
        enable_gqa=True,
    )
    return out.transpose(1, 2).contiguous(), None


def register() -> str:
    """Register the attention (and its mask, the sdpa one) with transformers; returns its name."""
    global _registered
    if not _registered:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

        AttentionInterface.register(NAME, gqa_sdpa_forward)
        AttentionMaskInterface.register(NAME, sdpa_mask)
        _registered = True
    return NAME

"""Grouped-query attention without copying the KV heads on CPU (``attn_implementation="sage_sdpa"``).

transformers' ``sdpa`` attention expands the key/value heads with ``repeat_kv`` whenever a padding
mask is present, because its fused GPU kernels cannot take a mask together with GQA. Every batched
generation step has a padding mask, so on CPU that copy dominated: a profile of SmolLM2-135M
(9 query heads, 3 KV heads) put 64% of ``hf:`` generation time in ``repeat_kv``. torch's CPU
``scaled_dot_product_attention`` accepts a mask together with ``enable_gqa=True``, so on CPU this
attention passes the unexpanded heads; everywhere else it is transformers' ``sdpa`` unchanged.
Numerically it is the same attention (tests/backends/test_attention.py).

Packed training batches (TRL's padding-free packing: every example of a batch in ONE row, its
documents told apart by ``position_ids`` and ``cu_seq_lens_q``) are the other CPU case. Without a
varlen kernel, stock ``sdpa`` attends over the whole row under a block-diagonal mask: (sum of the
lengths)^2 scores instead of the sum of their squares, and a copy of the KV heads. Here each
document is attended on its own with ``is_causal`` (torch's fused CPU kernel, no mask), which is
what flash attention's varlen kernel does on a GPU.
"""

from __future__ import annotations

import itertools
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

    cu = kwargs.get("cu_seq_lens_q")
    if cu is not None and query.shape[0] == 1 and query.shape[2] == key.shape[2] and dropout == 0.0:
        return _varlen_forward(query, key, value, cu, scaling, getattr(module, "num_key_value_groups", 1) > 1)

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


def _varlen_forward(query: Any, key: Any, value: Any, cu: Any, scaling: float | None, gqa: bool) -> tuple[Any, None]:
    """Causal attention within each packed document of a one-row batch (no cache, no mask)."""
    import torch

    bounds = [int(x) for x in cu.tolist()]
    parts = [
        torch.nn.functional.scaled_dot_product_attention(
            query[:, :, s:e], key[:, :, s:e], value[:, :, s:e], is_causal=True, scale=scaling, enable_gqa=gqa
        )
        for s, e in itertools.pairwise(bounds)
        if e > s
    ]
    out = torch.cat(parts, dim=2) if len(parts) > 1 else parts[0]
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

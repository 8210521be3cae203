"""The hf backend's per-row sampler draws from the distribution its settings define: temperature,
top-k and top-p over the whole vocabulary, with the k-best shortcut and the full sort agreeing."""

from __future__ import annotations

import math

import pytest
import torch

from sage_dialog.backends.base import SamplingParams
from sage_dialog.backends.hf import _make_sampler, _Row

VOCAB = 50
LOGITS = torch.linspace(3.0, -3.0, VOCAB)  # token 0 most likely, then 1, 2, ...


def _draws(sp: SamplingParams, n: int = 4000) -> torch.Tensor:
    rows = [_Row(sp, i) for i in range(n)]
    sampler = _make_sampler(rows, VOCAB, "cpu")
    scores = LOGITS.expand(n, VOCAB).clone()
    out = sampler(torch.zeros((n, 1), dtype=torch.long) + VOCAB - 1, scores)
    assert bool((out.max(-1).values == 0).all())  # one chosen token per row
    return out.argmax(-1)


def _expected(temp: float, keep: int) -> list[float]:
    z = [math.exp(float(x) / temp) for x in LOGITS[:keep]]
    return [v / sum(z) for v in z]


@pytest.mark.parametrize("top_k, top_p, keep", [(4, 1.0, 4), (10, 0.5, None), (0, 0.5, None)])
def test_samples_follow_the_truncated_distribution(top_k, top_p, keep):
    temp = 0.8
    probs = torch.softmax(LOGITS / temp, -1)
    if keep is None:  # top-p over the whole vocabulary: the smallest head whose mass reaches top_p
        before = probs.cumsum(-1) - probs
        keep = int((before <= top_p).sum())
        keep = min(keep, top_k) if top_k else keep
    draws = _draws(SamplingParams(temperature=temp, top_k=top_k, top_p=top_p, repetition_penalty=1.0, seed=7))
    assert int(draws.max()) < keep  # nothing outside the kept head
    freq = torch.bincount(draws, minlength=VOCAB).float() / len(draws)
    for tok, p in enumerate(_expected(temp, keep)):
        assert float(freq[tok]) == pytest.approx(p, abs=0.03)


def test_the_k_best_shortcut_and_the_full_sort_keep_the_same_tokens():
    """A batch where one row has no top-k takes the full-sort path; both keep the same head."""
    sp = SamplingParams(temperature=1.0, top_k=3, top_p=0.95, repetition_penalty=1.0, seed=1)
    mixed = [_Row(sp, i) for i in range(2000)] + [_Row(SamplingParams(temperature=0.0), 0)]
    sampler = _make_sampler(mixed, VOCAB, "cpu")
    assert sampler.k_cap is None
    out = sampler(torch.zeros((len(mixed), 1), dtype=torch.long), LOGITS.expand(len(mixed), VOCAB).clone())
    full = out.argmax(-1)[:-1]
    short = _draws(sp, 2000)
    assert set(full.tolist()) == set(short.tolist()) == {0, 1, 2}
    assert int(out.argmax(-1)[-1]) == 0  # the greedy row

"""Prompt sharing across the requests of one call on hf: (share_prompt): the same samples and scores as
the unshared path, with fewer prompt tokens read."""

from __future__ import annotations

import asyncio

import pytest

from sage_dialog.backends import ChatRequest, SamplingParams, ScoreRequest, load_backend
from sage_dialog.backends.hf import HFBackend

DIALOG = [{"role": "user", "content": "i failed my exam today and i feel bad about it"},
          {"role": "assistant", "content": "oh no, i am sorry to hear that"},
          {"role": "user", "content": "thanks, what should i do now"}]
OTHER = [{"role": "user", "content": "my sister is getting married next week"}]


def _spy(b: HFBackend) -> list[tuple[int, int, int | None]]:
    """Record (rows, tokens, logits_to_keep) of every forward pass of ``b``'s model."""
    calls: list[tuple[int, int, int | None]] = []
    original = b.lm.forward

    def spy(*args, **kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        calls.append((*ids.shape, kwargs.get("logits_to_keep")))
        return original(*args, **kwargs)

    b.lm.forward = spy
    return calls


def test_requests_with_the_same_prompt_share_one_prefill_and_give_the_unshared_samples(tiny_model):
    """A search decision's candidates are n one-sample requests on one dialog, one seed each."""
    shared = load_backend(f"hf:{tiny_model}", share_base=False)
    plain = load_backend(f"hf:{tiny_model}", share_prompt=False, share_base=False)
    assert isinstance(shared, HFBackend)
    reqs = [ChatRequest(DIALOG, n=1, sampling=SamplingParams(temperature=0.9, max_tokens=8, seed=s)) for s in (1, 2, 3)]
    reqs += [ChatRequest(OTHER, n=1, sampling=SamplingParams(temperature=0.0, max_tokens=6)),
             ChatRequest(OTHER, n=2, sampling=SamplingParams(temperature=0.0, max_tokens=6)),
             ChatRequest(DIALOG, n=1, sampling=SamplingParams(temperature=0.0, max_tokens=8))]
    calls = _spy(shared)
    got = asyncio.run(shared.generate(reqs))
    want = asyncio.run(plain.generate(reqs))
    assert [[c.text for c in r.completions] for r in got] == [[c.text for c in r.completions] for r in want]
    assert [[c.tokens_out for c in r.completions] for r in got] == [[c.tokens_out for c in r.completions] for r in want]
    # 7 rows, 2 distinct prompts: the first forward read 2 prompts, then generation went on with 7 rows
    assert calls[0][0] == 2 and calls[1][0] == 7
    greedy = [r.completions[0].text for r in got[3:]]
    assert greedy[0] == greedy[1] == got[4].completions[1].text  # greedy rows of one prompt agree


def test_score_prompts_read_only_what_they_do_not_share_with_the_previous_one(tiny_model):
    """Score-mode annotation asks two fields of one message; the second prompt reuses the first's cache."""
    shared = load_backend(f"hf:{tiny_model}", share_base=False)
    plain = load_backend(f"hf:{tiny_model}", share_prompt=False, share_base=False)
    assert isinstance(shared, HFBackend)

    def req(field: str, msgs=DIALOG) -> ScoreRequest:
        return ScoreRequest(msgs, [" happy", " sad", " curious about it"], prefill=f"The {field} is")

    reqs = [req("motivation"), req("emotion"), req("emotion"), req("motivation", OTHER)]
    calls = _spy(shared)
    got = asyncio.run(shared.score(reqs))
    want = asyncio.run(plain.score(reqs))
    for g, w in zip(got, want, strict=True):
        assert g.logprobs == pytest.approx(w.logprobs, abs=1e-4)
        assert g.tokens_in == w.tokens_in
    heads = [c[1] for c in calls if c[2] == 1]  # prompt passes keep one position's logits; options keep all
    first = heads[0]
    # the 2nd prompt read only its tail after the shared dialog; the 3rd (the same prompt) read nothing
    assert len(heads) == 3 and heads[1] < first // 2
    assert got[1].logprobs == pytest.approx(got[2].logprobs, abs=1e-6)


def test_one_token_options_are_scored_from_the_prompt_pass_alone(tiny_model):
    """A judge's " A" / " B" and most labels are one token: the prompt's own last logits score them,
    with the same log-probabilities as feeding each option after the prompt."""
    b = load_backend(f"hf:{tiny_model}", share_base=False)
    assert isinstance(b, HFBackend)
    tok = b.tokenizer
    opts = [o for o in (" A", " B", " a", " b", " yes", " no") if len(tok(o, add_special_tokens=False)["input_ids"]) == 1]
    assert len(opts) >= 2
    calls = _spy(b)
    [got] = asyncio.run(b.score([ScoreRequest(DIALOG, opts, prefill="The answer is")]))
    assert len(calls) == 1 and calls[0][2] == 1  # the prompt pass, nothing after it
    import torch

    from sage_dialog.backends.prompting import render_prompt

    ids = tok(render_prompt(tok, DIALOG, "The answer is"), add_special_tokens=False)["input_ids"]
    for o, lp in zip(opts, got.logprobs, strict=True):
        full = torch.tensor([ids + tok(o, add_special_tokens=False)["input_ids"]])
        with torch.inference_mode():
            logits = b.lm(input_ids=full).logits[0, -2].float()
        want = float(torch.log_softmax(logits, -1)[full[0, -1]])
        assert lp == pytest.approx(want, abs=1e-4)

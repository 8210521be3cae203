"""Constrained decoding for the in-process ``hf`` backend: a JSON schema becomes a per-token mask.

The grammar library is **xgrammar** (extra ``sage-dialog[structured]``), chosen by measurement
over outlines-core and lm-format-enforcer (``benchmarks/bench_structured.py``; numbers in
``docs/backends.md``): it adds under a millisecond per token at SmolLM2's 49k vocabulary, the
others tens of milliseconds, and its JSON is compact by construction.

* :class:`GrammarCache` holds one compiler per tokenizer and the compiled grammars per schema
  (least recently used first out).
* :func:`grammar_processor` is a transformers ``LogitsProcessor`` that masks, row by row, the
  tokens a row's grammar does not allow; rows without a schema pass through untouched, so one
  batch mixes both. It must run before the sampler.
* JSON is **compact**: no free whitespace between tokens (``{"a":"x","b":[1,2]}``), so a model
  cannot spend its ``max_tokens`` on ``\\t`` and ``\\r`` inside the object (issue 16).

``xgrammar`` is imported only when a request carries a schema.
"""

from __future__ import annotations

import collections
import json
import logging
from collections.abc import Sequence
from typing import Any

from sage_dialog.core.errors import UserError

log = logging.getLogger(__name__)

COMPACT_SEPARATORS = (",", ":")


def available() -> bool:
    """True when xgrammar can be imported."""
    import importlib.util

    return importlib.util.find_spec("xgrammar") is not None


class GrammarCache:
    """Compile JSON schemas for one tokenizer (once each) and hand out fresh matchers."""

    def __init__(self, tokenizer: Any, vocab_size: int, stop_ids: Sequence[int], max_grammars: int = 64):
        import xgrammar as xgr

        self.xgr = xgr
        self.vocab_size = int(vocab_size)
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=self.vocab_size, stop_token_ids=list(stop_ids))
        self.compiler = xgr.GrammarCompiler(info, max_threads=1)
        self.max_grammars = max_grammars
        self._compiled: collections.OrderedDict[str, Any] = collections.OrderedDict()

    def compiled(self, schema: dict[str, Any]) -> Any:
        key = json.dumps(schema, sort_keys=True)
        hit = self._compiled.get(key)
        if hit is not None:
            self._compiled.move_to_end(key)
            return hit
        try:
            ctx = self.compiler.compile_json_schema(key, any_whitespace=False, separators=COMPACT_SEPARATORS)
        except Exception as e:  # xgrammar raises RuntimeError/ValueError on schemas it cannot express
            raise UserError(f"json_schema: xgrammar cannot compile it: {str(e).splitlines()[0]}") from None
        self._compiled[key] = ctx
        if len(self._compiled) > self.max_grammars:
            self._compiled.popitem(last=False)
        return ctx

    def matcher(self, schema: dict[str, Any]) -> Any:
        """A fresh matcher (one per sampled row: it tracks that row's position in the grammar)."""
        return self.xgr.GrammarMatcher(self.compiled(schema))


def grammar_processor(matchers: Sequence[Any], vocab_size: int) -> Any:
    """A ``LogitsProcessor`` that keeps each row with a matcher inside its grammar.

    At every step after the first it feeds each active row's last token to its matcher; a row whose
    grammar has ended (it emitted the stop token) or that was finished by something else (its own
    ``max_tokens``: transformers then pads it) is left alone from then on.
    """
    import torch
    import xgrammar as xgr
    from transformers import LogitsProcessor

    rows = [i for i, m in enumerate(matchers) if m is not None]

    class GrammarMask(LogitsProcessor):
        def __init__(self) -> None:
            self.bitmask = xgr.allocate_token_bitmask(len(matchers), vocab_size)
            self.started = False
            self.done: set[int] = set()

        def __call__(self, input_ids: Any, scores: Any) -> Any:
            if self.started:
                last = input_ids[:, -1].tolist()
                for i in rows:
                    if i in self.done:
                        continue
                    m = matchers[i]
                    # a rejected token means the row was finished outside the grammar (padding)
                    if not m.accept_token(int(last[i])) or m.is_terminated():
                        self.done.add(i)
            self.started = True
            active = [i for i in rows if i not in self.done]
            if not active:
                return scores
            scores = scores.to(torch.float32).contiguous()
            for i in active:
                matchers[i].fill_next_token_bitmask(self.bitmask, i)
            xgr.apply_token_bitmask_inplace(scores, self.bitmask.to(scores.device), indices=active)
            return scores

    return GrammarMask()


__all__ = ["COMPACT_SEPARATORS", "GrammarCache", "available", "grammar_processor"]

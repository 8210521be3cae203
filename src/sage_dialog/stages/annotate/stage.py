"""The annotate stage: label every utterance of every dialog (motivation, emotion, topics).

:func:`run` streams the input (our Dialog JSONL, raw ShareGPT JSON, EmpatheticDialogues CSV, ESConv
JSON or a seed file; :mod:`.dialogs`) in chunks, hands each chunk to the annotator role (the oracle,
or :mod:`sage_dialog.roles.annotator` made by :func:`sage_dialog.roles.factory.make_annotator`: the
backend sees the whole chunk's requests at once and runs them concurrently), writes annotated dialogs
(user turns carry ``state``, assistant turns ``action``), the rejects file (every dialog the annotator
could not label, with the reason) and the summary JSON (a manifest with the label distribution), and
returns a :class:`Result`. Resuming is the backend cache's job: the same input annotated again makes
zero model calls.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from sage_dialog.backends.base import BackendConfig
from sage_dialog.core.errors import UserError
from sage_dialog.core.io import atomic_write, check_paths, dumps, new_manifest, sha256_path, write_json
from sage_dialog.core.redact import redact_obj
from sage_dialog.core.schema import Dialog, utc_now
from sage_dialog.roles.annotator import FIELDS, ROLES, LabelSets, ScoringAnnotator, load_few_shot
from sage_dialog.roles.factory import BackendPool
from sage_dialog.roles.protocols import AnnotationResult, Annotator
from sage_dialog.stages.annotate.dialogs import InputFormat, chunks, count_dialogs, load_dialogs
from sage_dialog.stages.base import StageResult, StageSettings
from sage_dialog.stages.engine import EngineSettings, engine_field, in_order


class Settings(StageSettings):
    """The ``annotate`` stage (a run config's ``annotate:`` section): the annotator and how it labels."""

    annotator: str | BackendConfig = Field(description='"oracle" or a backend spec (hf:PATH, vllm:PATH, openai:MODEL, '
                                           'mock:FILE)')
    input_format: InputFormat = Field("auto", description="auto (detected), seeds (one utterance per line), or a "
                                      "dialog format of `sage-dialog convert --help`: dialogs, sharegpt, trl-sft, "
                                      "llamafactory-sft, transcripts, empathetic, esconv, ...")
    labels: dict[str, str] = Field(default_factory=dict, description="closed label set for FIELD or ROLE.FIELD "
                                   "(motivation, emotion, topics; user, assistant): a shipped set "
                                   "(esconv_strategies, empathetic_emotions) or a file, one label per line")
    closed: Literal["map", "reject"] = Field("map", description="closed sets: map near misses onto the set or "
                                             "refuse them")
    tidy: bool = Field(False, description="let the annotator tidy text and add a bridging question (original kept "
                       "in original_text)")
    max_attempts: int = Field(3, ge=1, description="requests per dialog, repairs included")
    temperature: float = Field(0.0, ge=0, description="sampling temperature of the annotator")
    max_tokens_per_turn: int = Field(48, ge=8, description="answer length allowed per dialog turn (with constrained "
                                     "decoding at least what the bounded schema allows: never cut off)")
    mode: Literal["generate", "score"] = Field(
        "generate", description="generate: a JSON answer per dialog (models of ~1B parameters and up, or an API "
        "model; with hf: and xgrammar the JSON is constrained and bounded); score: choose each closed label by "
        "the backend's option scores (valid by construction; topics left empty; the mode for small models such "
        "as smollm2-135m, which write JSON but fill it with repeated text)")
    json_prefill: bool = Field(False, description="start each answer with its JSON head (for small models that "
                               "otherwise continue the dialog; backends without constrained decoding)")
    chunk_size: int = Field(64, ge=1, description="dialogs handed to the backend at once")
    cache: str | None = Field(None, description="response cache (SQLite) path; re-runs take answers from it")
    backend_options: dict[str, Any] = Field(default_factory=dict, description="backend constructor options, e.g. "
                                            "base_url=http://127.0.0.1:8000/v1")
    limit: int | None = Field(None, ge=1, description="annotate only the first N dialogs")
    threads: int | None = Field(None, ge=1, description="CPU threads for torch/BLAS (default: OMP_NUM_THREADS, "
                                "else the cores not busy now, at least 1)")
    engine: EngineSettings = engine_field()


class _AnnotatePaths(BaseModel):
    input: Path = Field(description="dialogs to annotate")
    output: Path = Field(description="annotated Dialog JSONL to write")
    rejects: Path | None = Field(None, description="rejects JSONL (default: OUTPUT.rejects.jsonl)")
    summary: Path | None = Field(None, description="summary JSON (default: OUTPUT.summary.json)")
    sharegpt_output: Path | None = Field(None, description="also write the original annotated ShareGPT JSON")
    sac_output: Path | None = Field(None, description="also chain the result into SAC dialogs (Dialog .jsonl, or "
                                    "chained ShareGPT .json)")


class AnnotateConfig(Settings, _AnnotatePaths):  # the input and outputs come first (pydantic orders fields by the bases)
    """``sage-dialog annotate``: the settings plus the input, the outputs and the annotator's files."""

    few_shot: Path | None = Field(None, description="annotated Dialog JSONL used as few-shot examples")
    prompt: Path | None = Field(None, description="a custom annotator prompt template (string.Template)")

    def inputs(self) -> Inputs:
        return Inputs(dialogs=self.input, few_shot=self.few_shot, prompt=self.prompt)

    def files(self) -> OutputFiles:
        return OutputFiles(rejects=self.rejects, summary=self.summary, sharegpt=self.sharegpt_output,
                           sac=self.sac_output)

    def rejects_path(self) -> Path:
        return rejects_path(self.output, self.files())

    def summary_path(self) -> Path:
        return summary_path(self.output, self.files())


@dataclass
class Inputs:
    """What the stage reads: the dialogs, the LLM annotator's few-shot examples and prompt template, or
    an annotator role object to use as it is (the Python API; the settings' annotator is then unused)."""

    dialogs: Path
    few_shot: Path | None = None
    prompt: Path | None = None
    annotator: Annotator | None = None


@dataclass
class OutputFiles:
    """The files written besides ``out`` (the annotated dialogs); None: the default beside ``out``."""

    rejects: Path | None = None
    summary: Path | None = None
    sharegpt: Path | None = None  # also the original annotated ShareGPT JSON
    sac: Path | None = None  # also the dialogs chained into SAC


def _beside(out: Path, suffix: str) -> Path:
    if not out.name:  # ".", "/", "..": a folder, and no name to put beside it
        raise UserError(f"{out}: is a folder, expected an output file")
    return out.with_name(out.name.removesuffix(".jsonl") + suffix)


def rejects_path(out: Path, files: OutputFiles | None = None) -> Path:
    """Where the rejects of an annotation into ``out`` go."""
    return (files.rejects if files else None) or _beside(out, ".rejects.jsonl")


def summary_path(out: Path, files: OutputFiles | None = None) -> Path:
    """Where the summary JSON of an annotation into ``out`` goes."""
    return (files.summary if files else None) or _beside(out, ".summary.json")


class Result(StageResult):
    """Outputs: ``annotated``, ``rejects``, ``summary`` (and ``sharegpt``, ``sac`` when asked). Counts:
    dialogs, annotated (valid), rejected, repaired_by_retry, repaired_locally, mapped_labels, turns.
    Usage: the annotator's requests, cached answers and model calls, and the backend ledger
    (``tokens_per_s``). ``text``: the label distribution as a few lines (the caller shows it)."""

    text: str = ""


def build_annotator(settings: Settings, inputs: Inputs, ledger: Any = None) -> tuple[Annotator, BackendPool]:
    """The annotator the settings name (made by :func:`roles.factory.make_annotator`) and the pool of its
    backends to close afterwards. ``ledger`` (a :class:`backends.ledger.Ledger`) counts the backend's
    calls, cache hits included."""
    from sage_dialog.roles.factory import is_oracle, make_annotator

    labels = LabelSets.from_spec(settings.labels, settings.closed)  # a bad set is an error for any annotator
    pool = BackendPool(settings.cache, ledger=ledger)
    if is_oracle(settings.annotator):
        llm_only = [k for k in ("few_shot", "prompt") if getattr(inputs, k)] + (["labels"] if settings.labels else []) \
            + (["tidy"] if settings.tidy else [])
        if llm_only:
            raise UserError(f"annotator 'oracle': option(s) {', '.join(llm_only)} only apply to an LLM annotator")
        return make_annotator(str(settings.annotator), pool), pool
    bcfg = settings.annotator if isinstance(settings.annotator, BackendConfig) else BackendConfig(spec=settings.annotator)
    options = {**bcfg.options, **settings.backend_options}
    if bcfg.spec.startswith("openai:"):
        # one failed request rejects its dialog (with the reason), not the whole chunk
        options.setdefault("on_error", "return")
    bcfg = bcfg.model_copy(update={"options": options})
    # every input is checked before a model is loaded
    few = load_few_shot(inputs.few_shot) if inputs.few_shot else []
    template = None
    if inputs.prompt:
        try:
            template = inputs.prompt.read_text(encoding="utf-8")
        except (FileNotFoundError, IsADirectoryError):
            raise UserError(f"{inputs.prompt}: no such prompt file") from None
    if settings.mode == "score":  # checked before the model loads
        missing = [f"{r}.{f}" for r in ROLES for f in ScoringAnnotator.FIELDS if labels.get(r, f) is None]
        if missing:
            raise UserError(f"annotate: mode=score needs closed label sets for {', '.join(missing)} "
                            f"(labels: {{motivation: SET, emotion: SET}})")
        return make_annotator(bcfg, pool, labels=labels, mode="score"), pool
    return make_annotator(bcfg, pool, labels=labels, tidy=settings.tidy, few_shot=few,
                          max_attempts=settings.max_attempts, temperature=settings.temperature,
                          max_tokens_per_turn=settings.max_tokens_per_turn, template=template,
                          json_prefill=settings.json_prefill), pool


def apply_result(dialog: Dialog, result: AnnotationResult) -> Dialog:
    """The annotated copy of ``dialog``: tags on turns, tidied text with the original kept."""
    assert result.tags is not None
    turns = []
    for i, (t, tags) in enumerate(zip(dialog.turns, result.tags, strict=True)):
        new = t.model_copy()
        new.state, new.action = (tags, None) if t.role == "user" else (None, tags)
        if result.texts is not None and result.texts[i] != t.text:
            new.original_text = t.original_text or t.text
            new.text = result.texts[i]
        turns.append(new)
    return dialog.model_copy(update={"turns": turns})


def _check_result(dialog: Dialog, result: AnnotationResult) -> str | None:
    """A reason to reject what an annotator returned (any annotator, oracle included)."""
    if result.tags is None:
        return result.error or "annotator gave no tags"
    if len(result.tags) != len(dialog.turns):
        return f"annotator gave {len(result.tags)} tag sets for {len(dialog.turns)} turns"
    if result.texts is not None and len(result.texts) != len(dialog.turns):
        return f"annotator gave {len(result.texts)} texts for {len(dialog.turns)} turns"
    return None


def _reason_kind(reason: str) -> str:
    """A short category of a rejection reason, for the summary."""
    r = reason.lower()
    for key, kind in (("backend error", "backend_error"), ("cut off", "truncated"), ("not json", "malformed_json"),
                      ("expected a json object", "malformed_json"), ("expected", "wrong_turn_count"),
                      ("missing", "missing_field"), ("empty", "missing_field"), ("not an allowed", "label_not_allowed"),
                      ("indices", "bad_indices")):
        if key in r:
            return kind
    return "other"


class Summary:
    """Counts and label distributions of one annotation run."""

    def __init__(self) -> None:
        self.dialogs = 0
        self.annotated = 0
        self.rejected = 0
        self.turns = 0
        self.reasons: Counter[str] = Counter()
        self.attempts: Counter[int] = Counter()
        self.labels: dict[str, Counter[str]] = {f"{r}.{f}": Counter() for r in ROLES for f in FIELDS}
        self.tidied = 0
        self.repaired = 0

    def add(self, dialog: Dialog, result: AnnotationResult, reason: str | None) -> None:
        self.dialogs += 1
        self.attempts[result.attempts] += 1
        if reason is not None:
            self.rejected += 1
            self.reasons[_reason_kind(reason)] += 1
            return
        self.annotated += 1
        self.repaired += result.attempts > 1
        for t in dialog.turns:
            self.turns += 1
            tags = t.state if t.role == "user" else t.action
            if t.original_text is not None:
                self.tidied += 1
            if tags is None:
                continue
            self.labels[f"{t.role}.motivation"][tags.motivation or "null"] += 1
            self.labels[f"{t.role}.emotion"][tags.emotion or "null"] += 1
            for x in tags.topics or []:
                self.labels[f"{t.role}.topics"][x] += 1

    def as_dict(self, top: int = 20) -> dict[str, Any]:
        return {
            "dialogs": self.dialogs,
            "annotated": self.annotated,
            "rejected": self.rejected,
            "reject_reasons": dict(self.reasons.most_common()),
            "turns": self.turns,
            "tidied_turns": self.tidied,
            "repaired_by_retry": self.repaired,
            "attempts": {str(k): v for k, v in sorted(self.attempts.items())},
            "labels": {k: dict(c.most_common(top)) for k, c in self.labels.items() if c},
            "distinct_labels": {k: len(c) for k, c in self.labels.items() if c},
        }

    def render(self, top: int = 8) -> str:
        d = self.as_dict(top)
        lines = [f"annotated {d['annotated']} of {d['dialogs']} dialogs ({d['turns']} turns); "
                 f"rejected {d['rejected']}" + (f" {d['reject_reasons']}" if d["rejected"] else "")]
        for key, counts in d["labels"].items():
            total = sum(self.labels[key].values())
            shown = ", ".join(f"{lab} {100 * n / total:.0f}%" for lab, n in counts.items())
            lines.append(f"  {key} ({d['distinct_labels'][key]} distinct): {shown}")
        return "\n".join(lines)


COUNT_KEYS = ("dialogs", "annotated", "rejected", "repaired_by_retry", "repaired_locally")


def write_sharegpt_annotated(path: Path, dialogs: Sequence[Dialog]) -> None:
    """The original annotated ShareGPT file: every value prefixed by its ``{motivation: ...}`` block."""
    from sage_dialog.formats.sharegpt import write_sharegpt

    write_sharegpt(path, dialogs, style="annotated")


async def _run_async(settings: Settings, dialogs_in: Path, out: Path, files: OutputFiles, annotator: Annotator,
                     total: int, progress: bool) -> dict[str, Any]:
    from tqdm import tqdm

    summary = Summary()
    keep_for_sharegpt: list[Dialog] = []
    usage_before = Counter(getattr(annotator, "stats", Counter()))
    dialogs = load_dialogs(dialogs_in, settings.input_format)
    if settings.limit:
        dialogs = itertools.islice(dialogs, settings.limit)
        total = min(total, settings.limit)
    from sage_dialog.backends import progress as ticks

    with atomic_write(out) as fh, atomic_write(rejects_path(out, files)) as rej, \
            tqdm(total=total, unit="dialog", desc="annotate", file=sys.stderr, dynamic_ncols=True,
                 disable=not progress) as bar, ticks.listen(ticks.Meter(bar)) as meter:
        # the bar counts dialogs per chunk; its postfix moves with every request and token inside one
        window = getattr(annotator, "parallel_chunks", 1)  # a Ray annotator keeps all its workers busy
        async for chunk, results in in_order(annotator.annotate, chunks(dialogs, settings.chunk_size), window):
            if len(results) != len(chunk):
                raise RuntimeError(f"annotator {annotator.name} returned {len(results)} results for {len(chunk)} dialogs")
            for d, r in zip(chunk, results, strict=True):
                reason = _check_result(d, r)
                if reason is None:
                    done = apply_result(d, r)
                    fh.write(dumps(done) + "\n")
                    summary.add(done, r, None)
                    if files.sharegpt:
                        keep_for_sharegpt.append(done)
                else:
                    # a backend's error text may echo the API key: the rejects file never holds it
                    rej.write(json.dumps(redact_obj({"id": d.id, "reason": reason, "attempts": r.attempts,
                                                     "raw": r.raw,
                                                     "dialog": d.model_dump(mode="json", exclude_none=True)}),
                                         ensure_ascii=False) + "\n")
                    summary.add(d, r, reason)
            bar.update(len(chunk))
        meter.close()
    if files.sharegpt:
        write_sharegpt_annotated(files.sharegpt, keep_for_sharegpt)
    stats = Counter(getattr(annotator, "stats", Counter()))
    stats.subtract(usage_before)
    result = summary.as_dict()
    # answers fixed without asking again, and closed-set near misses mapped onto their label
    result["repaired_locally"] = stats.pop("repaired_locally", 0)
    result["mapped_labels"] = stats.pop("mapped_labels", 0)
    result["usage"] = {k: v for k, v in stats.items()}
    if "requests" in result["usage"]:
        result["usage"]["model_calls"] = result["usage"]["requests"] - result["usage"].get("cached", 0)
    result["text"] = summary.render()
    return result


def run(settings: Settings, *, inputs: Inputs, out: Path, files: OutputFiles | None = None,
        progress: bool = False) -> Result:
    """Annotate ``inputs.dialogs`` into ``out`` (annotated Dialog JSONL).

    Writes the rejects file (always, possibly empty) and the summary JSON (a manifest with the label
    distribution in ``summary``) beside ``out`` unless ``files`` names them, and what else ``files``
    asks for. ``progress`` shows a progress bar on stderr.
    """
    files = files or OutputFiles()
    t0 = time.perf_counter()
    check_paths(inputs=[inputs.dialogs, inputs.few_shot, inputs.prompt],
                files=[out, rejects_path(out, files), summary_path(out, files), files.sharegpt, files.sac])
    if settings.threads is not None:
        from sage_dialog.core import threads

        threads.apply(settings.threads)
    total = count_dialogs(inputs.dialogs, settings.input_format)
    from sage_dialog.backends.ledger import Ledger

    closing: Any = None  # what to close afterwards: the backends' pool, or the Ray workers
    ledger = Ledger("annotate")
    annotator = inputs.annotator
    if annotator is None and settings.engine.kind == "ray":
        from sage_dialog.stages.annotate.remote import RemoteAnnotator

        # one annotator per Ray worker; chunks are the units
        annotator = closing = RemoteAnnotator(settings, partial(build_annotator, inputs=inputs))
    elif annotator is None:
        annotator, closing = build_annotator(settings, inputs, ledger)
    # the manifest's config is the command's config as it always was: the settings and every path
    config = {"input": str(inputs.dialogs), "output": str(out), **settings.model_dump(mode="json"),
              "rejects": str(files.rejects) if files.rejects else None,
              "summary": str(files.summary) if files.summary else None,
              "sharegpt_output": str(files.sharegpt) if files.sharegpt else None,
              "sac_output": str(files.sac) if files.sac else None,
              "few_shot": str(inputs.few_shot) if inputs.few_shot else None,
              "prompt": str(inputs.prompt) if inputs.prompt else None}
    manifest = new_manifest("annotate", config, inputs={str(inputs.dialogs): sha256_path(inputs.dialogs)})

    async def main() -> dict[str, Any]:
        try:
            return await _run_async(settings, inputs.dialogs, out, files, annotator, total, progress)
        finally:
            if closing is not None:
                await closing.aclose()

    result = asyncio.run(main())
    if files.sac:
        from sage_dialog.stages.chain import chain_file

        chain_file(out, files.sac, src_format="dialogs")
    text = result.pop("text")
    manifest.usage = {**result.pop("usage"), "ledger": ledger.to_dict()["totals"]}
    manifest.summary = result
    written = {"annotated": out, "rejects": rejects_path(out, files), "summary": summary_path(out, files),
               "sharegpt": files.sharegpt, "sac": files.sac}
    manifest.outputs = [str(p) for k, p in written.items() if p and k != "summary"]
    manifest.finished = utc_now()
    write_json(summary_path(out, files), manifest)
    counts = {k: result.get(k, 0) for k in (*COUNT_KEYS, "mapped_labels", "turns")}
    return Result(outputs={k: p for k, p in written.items() if p}, counts=counts, usage=dict(manifest.usage),
                  text=text, seconds=time.perf_counter() - t0)

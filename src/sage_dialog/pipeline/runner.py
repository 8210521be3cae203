"""The stage runner behind ``sage-dialog run``: ordered stages, content-hash skipping, resumable.

Each stage writes into its own folder of the run directory and a ``manifest.json`` that records the
stage's *fingerprint*: the hash of its config, the content of its external input files and the
fingerprints of the stages it reads from. A stage whose fingerprint matches its finished manifest is
skipped; change one config value and exactly that stage and the ones downstream of it re-run.

A stage runs in a temporary sibling folder that replaces the old one only when it finishes, so a
killed run never leaves a half-written stage that a later run would take as done.

*Gates* stop a run whose outputs are empty or noise before the next stage learns from them. A stage's
summary carries its quality counts (rejected dialogs, unparsed verdicts, training examples, ...); each
:class:`Gate` of a stage compares one count (or its share of a total) with a threshold from
:class:`GatesConfig`, after the stage ran or was skipped. A stage that fails a gate stays finished (its
work is kept, a re-run does not pay for it again) and the run stops there; the message names the stage,
the count and the setting to change. ``gates=False`` (``--no-gates``) only reports, and the manifest of
every stage that ran says so.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sage_dialog.core import console
from sage_dialog.core.errors import UserError
from sage_dialog.core.io import finish_manifest, new_manifest, note_kept, read_json, sha256_path, stable_hash
from sage_dialog.core.outputs import claim, commit_folder, note_output_folder
from sage_dialog.core.rss import PeakRSS
from sage_dialog.core.schema import Manifest

FINGERPRINT_VERSION = 1


class GatesConfig(BaseModel):
    """Thresholds between stages (the ``gates:`` section of a loop config); ``null`` turns one off.

    Shares are fractions of the stage's total (0.2 = 20%); ``min_*`` counts are absolute.
    """

    model_config = ConfigDict(extra="forbid")
    max_rejected: float | None = Field(default=0.2, ge=0, le=1, description="annotate: largest share of dialogs the "
                                       "annotator may fail (rejected dialogs are not trained on)")
    max_unparsed_decisions: float | None = Field(default=0.5, ge=0, le=1, description="search: largest share of judge "
                                                 "decisions that did not parse (the first candidate was kept)")
    min_pairs: int | None = Field(default=1, ge=0, description="prefs: fewest preference pairs for DPO")
    min_train_examples: int | None = Field(default=1, ge=0, description="sft / rft / dpo: fewest training examples")
    min_parsed_verdicts: float | None = Field(default=0.8, ge=0, le=1, description="compare: smallest share of judge "
                                              "verdicts that parsed")
    min_judge_consistency: float | None = Field(default=None, ge=0, le=1, description="compare: smallest share of "
                                                "pairs, judged in both orders, whose verdict every judge kept when the "
                                                "dialogs were swapped (a judge below it is noise); null: off")


@dataclass(frozen=True)
class Gate:
    """One threshold on a stage's summary: ``count`` (or ``count`` / ``of``) against ``gates.<setting>``."""

    setting: str  # a field of GatesConfig
    limit: float | None  # None: the gate is off
    count: str  # summary key of the count checked
    of: str | None = None  # summary key of the total; the limit is then a share of it
    kind: Literal["max", "min"] = "max"
    hint: str = ""  # where to look when it fails
    detail: str | None = None  # summary key of a text that says more (e.g. which judge, its figures)

    def check(self, summary: dict[str, Any]) -> str | None:
        """None when the summary passes (or the gate is off or the count missing), else why it fails."""
        if self.limit is None or not isinstance(summary.get(self.count), int | float):
            return None
        n = summary[self.count]
        name = self.count.replace("_", " ")
        if self.of is None:
            value, shown, limit = float(n), f"{name} {n:g}", f"{self.limit:g}"
        else:
            total = summary.get(self.of) or 0
            value = n / total if total else 0.0  # 0 of 0: nothing rejected, nothing parsed
            shown, limit = f"{name} {n:g} of {total:g} ({100 * value:.0f}%)", f"{100 * self.limit:g}%"
        if (value > self.limit) if self.kind == "max" else (value < self.limit):
            rel = "above" if self.kind == "max" else "below"
            more = summary.get(self.detail) if self.detail else None
            return (f"{shown} is {rel} gates.{self.setting}={self.limit:g} ({limit})"
                    + (f"; {more}" if isinstance(more, str) and more else "")
                    + (f"; {self.hint}" if self.hint else ""))
        return None


def stage_gates(kind: str, cfg: GatesConfig) -> list[Gate]:
    """The standard gates of a stage kind (``annotate``, ``search``, ``prefs``, ``train``, ``compare``)."""
    table: dict[str, list[Gate]] = {
        "annotate": [Gate("max_rejected", cfg.max_rejected, "rejected", "dialogs",
                          hint="the rejects file of the stage says why")],
        "search": [Gate("max_unparsed_decisions", cfg.max_unparsed_decisions, "unparsed", "decisions",
                        hint="the judge's raw answers are in the trees")],
        "prefs": [Gate("min_pairs", cfg.min_pairs, "pairs", kind="min")],
        "train": [Gate("min_train_examples", cfg.min_train_examples, "train_examples", kind="min")],
        "compare": [Gate("min_parsed_verdicts", cfg.min_parsed_verdicts, "parsed", "verdicts", kind="min",
                         hint="the judge's raw answers are in verdicts.jsonl"),
                    Gate("min_judge_consistency", cfg.min_judge_consistency, "judge_consistent", "judge_both_orders",
                         kind="min", detail="judge_detail",
                         hint="its verdicts follow the order of presentation; use a stronger judge (report.md, "
                              "section Judges)")],
    }
    return table.get(kind, [])


@dataclass
class StageContext:
    """What a running stage sees: its output folder and its upstream stages' folders."""

    run_dir: Path
    out_dir: Path
    upstream: dict[str, Path]
    seed: int = 0

    def dir_of(self, stage: str) -> Path:
        try:
            return self.upstream[stage]
        except KeyError:
            raise KeyError(f"stage reads {stage!r} but does not declare it in deps") from None


@dataclass
class Stage:
    """One step: ``fn(ctx)`` writes into ``ctx.out_dir`` and returns a small summary dict."""

    name: str
    fn: Callable[[StageContext], dict[str, Any]]
    config: dict[str, Any] = field(default_factory=dict)
    deps: list[str] = field(default_factory=list)
    inputs: list[Path] = field(default_factory=list)
    gates: list[Gate] = field(default_factory=list)  # checked on the summary; not part of the fingerprint


@dataclass
class StageOutcome:
    name: str
    status: str  # "ran" | "skipped" | "failed" | "not run"
    seconds: float = 0.0
    summary: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    gate: str | None = None  # why the stage failed a gate (the run stopped after it unless gates were off)


def check_gates(stage: Stage, summary: dict[str, Any]) -> str | None:
    """The first gate of ``stage`` that ``summary`` fails, as a message naming stage, count and setting."""
    for g in stage.gates:
        why = g.check(summary)
        if why is not None:
            return f"stage {stage.name}: {why}"
    return None


def _manifest(stage_dir: Path) -> Manifest | None:
    path = stage_dir / "manifest.json"
    if not path.exists():
        return None
    try:
        return Manifest.model_validate(read_json(path))
    except Exception:
        return None  # an unreadable manifest means the stage must run again


def fingerprint(stage: Stage, upstream: dict[str, str]) -> str:
    for p in stage.inputs:
        if not Path(p).exists():
            raise UserError(f"stage {stage.name}: input {p}: no such file or folder")
    return stable_hash(
        {
            "v": FINGERPRINT_VERSION,
            "stage": stage.name,
            "config": stage.config,
            "inputs": {str(p): sha256_path(p) for p in stage.inputs},
            "deps": {d: upstream[d] for d in stage.deps},
        }
    )


def _check_graph(stages: Sequence[Stage]) -> None:
    seen: set[str] = set()
    for s in stages:
        if s.name in seen:
            raise UserError(f"pipeline: stage {s.name!r} appears twice")
        for d in s.deps:
            if d not in seen:
                raise UserError(f"pipeline: stage {s.name!r} depends on {d!r}, which does not run before it")
        seen.add(s.name)


def run_stages(
    stages: Sequence[Stage],
    run_dir: str | Path,
    *,
    from_stage: str | None = None,
    until: str | None = None,
    seed: int = 0,
    log: Callable[[str], None] = print,
    gates: bool = True,
) -> list[StageOutcome]:
    """Run ``stages`` in order into ``run_dir``; see the module docstring for the skipping rule.

    ``from_stage`` forces that stage and every later one to run; ``until`` stops after that stage.
    After each stage its gates are checked: a failed gate stops the run (``gates=False``: only reported;
    :attr:`StageOutcome.gate` holds the message either way).
    """
    _check_graph(stages)
    names = [s.name for s in stages]
    for opt, val in (("--from", from_stage), ("--until", until)):
        if val is not None and val not in names:
            raise UserError(f"{opt} {val}: no such stage; stages are: {', '.join(names)}")
    root = Path(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    caller_log = console.log_path()  # each stage logs to RUN_DIR/logs/STAGE.log; the caller's log resumes after
    fps: dict[str, str] = {}
    outcomes: list[StageOutcome] = []
    forcing = False
    stopped = False
    for stage in stages:
        if stopped:
            outcomes.append(StageOutcome(stage.name, "not run"))
            continue
        forcing = forcing or stage.name == from_stage
        fp = fingerprint(stage, fps)
        fps[stage.name] = fp
        out_dir = root / stage.name
        done = _manifest(out_dir)
        if not forcing and done is not None and done.finished and done.inputs.get("fingerprint") == fp:
            outcomes.append(StageOutcome(stage.name, "skipped", summary=done.summary,
                                         gate=check_gates(stage, done.summary)))
            log(f"[{stage.name}] unchanged, skipped")
        else:
            outcomes.append(_run_one(stage, root, fp, seed, log, gates))
            if outcomes[-1].status == "failed":
                stopped = True
        if outcomes[-1].gate is not None:
            log(f"[{stage.name}] gate: {outcomes[-1].gate}" + ("" if gates else " (--no-gates: going on)"))
            stopped = stopped or gates
        if stage.name == until:
            stopped = True
    console.close_log()
    if caller_log is not None:
        console.open_log(caller_log)
    return outcomes


def _run_one(stage: Stage, root: Path, fp: str, seed: int, log: Callable[[str], None],
             gates: bool = True) -> StageOutcome:
    out_dir = root / stage.name
    tmp = root / f".{stage.name}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    # the runner made this folder: a stage may put files in it (copied inputs) before its own output check
    note_output_folder(tmp)
    claim(tmp)
    manifest = new_manifest(stage.name, stage.config, seed=seed, inputs={"fingerprint": fp})
    ctx = StageContext(run_dir=root, out_dir=tmp, upstream={d: root / d for d in stage.deps}, seed=seed)
    log(f"[{stage.name}] running")
    log_file = console.stage_log(root, stage.name)  # library logs of this stage: RUN_DIR/logs/STAGE.log
    t0 = time.perf_counter()
    peak = PeakRSS()  # this stage's own peak (and its launched children's), not the process lifetime's
    try:
        with peak:
            summary = stage.fn(ctx) or {}
    except UserError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except Exception as e:  # keep finished stages; report which stage broke, why, and where the details are
        from sage_dialog.core.redact import redact

        logging.getLogger("traceback").exception("stage %s failed", stage.name)
        console.commit_log()
        return StageOutcome(stage.name, "failed", time.perf_counter() - t0,
                            error=redact(f"{type(e).__name__}: {e} (details in {log_file})"))
    except BaseException:  # interrupted: the half-done stage goes (a re-run starts it again), finished ones stay
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    seconds = time.perf_counter() - t0
    gate = check_gates(stage, summary)
    # what the gates said when the stage ran; "off" records a run with --no-gates
    checked = {"gates": "off" if not gates else "passed" if gate is None else "failed", **({"gate": gate} if gate else {})}
    outputs = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
    finish_manifest(manifest, tmp, outputs=outputs, summary={**summary, "seconds": round(seconds, 2),
                                                                       **peak.result(), **checked})
    commit_folder(tmp, out_dir, stage.name)  # an earlier result of the stage: only the files it wrote go
    note_kept(out_dir, f"stage {stage.name} finished; the next run skips it")
    log(f"[{stage.name}] done in {seconds:.1f}s, peak RSS {peak.result()['peak_rss_mb']:.0f} MB")
    return StageOutcome(stage.name, "ran", seconds, summary, gate=gate)


def _brief(summary: dict[str, Any], width: int = 110) -> str:
    parts = [f"{k}={round(v, 3) if isinstance(v, float) else v}" for k, v in summary.items()
             if k not in ("seconds", "gates", "gate", "judge_detail") and not k.startswith("peak_rss")
             and not isinstance(v, dict | list)]
    text = ", ".join(parts)
    return text if len(text) <= width else text[: width - 3] + "..."


def summary_table(outcomes: Sequence[StageOutcome]) -> str:
    """A plain-text table: stage, status, seconds, peak RSS (MB) and the stage's counts (its summary's numbers).

    A stage that failed a gate shows ``gate`` as its status (or ``ran*`` / ``skipped*`` when gates were
    off and the run went on); the message itself is printed by the caller.
    """
    rows = [("stage", "status", "seconds", "peak MB", "counts")]
    for o in outcomes:
        status = o.status if o.gate is None else f"{o.status}, gate failed"
        rss = o.summary.get("peak_rss_mb")
        rows.append((o.name, status, f"{o.seconds:.1f}" if o.status == "ran" else "",
                     f"{rss:.0f}" if isinstance(rss, int | float) else "", o.error or _brief(o.summary)))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)

"""The stage runner behind ``sage-dialog run``: ordered stages, content-hash skipping, resumable.

Each stage writes into its own folder of the run directory and a ``manifest.json`` that records the
stage's *fingerprint*: the hash of its config, the content of its external input files and the
fingerprints of the stages it reads from. A stage whose fingerprint matches its finished manifest is
skipped; change one config value and exactly that stage and the ones downstream of it re-run.

A stage runs in a temporary sibling folder that replaces the old one only when it finishes, so a
killed run never leaves a half-written stage that a later run would take as done.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sage_dialog.core.errors import UserError
from sage_dialog.core.io import finish_manifest, new_manifest, read_json, sha256_path, stable_hash
from sage_dialog.core.schema import Manifest

FINGERPRINT_VERSION = 1


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


@dataclass
class StageOutcome:
    name: str
    status: str  # "ran" | "skipped" | "failed" | "not run"
    seconds: float = 0.0
    summary: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


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
) -> list[StageOutcome]:
    """Run ``stages`` in order into ``run_dir``; see the module docstring for the skipping rule.

    ``from_stage`` forces that stage and every later one to run; ``until`` stops after that stage.
    """
    _check_graph(stages)
    names = [s.name for s in stages]
    for opt, val in (("--from", from_stage), ("--until", until)):
        if val is not None and val not in names:
            raise UserError(f"{opt} {val}: no such stage; stages are: {', '.join(names)}")
    root = Path(run_dir)
    root.mkdir(parents=True, exist_ok=True)
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
            outcomes.append(StageOutcome(stage.name, "skipped", summary=done.summary))
            log(f"[{stage.name}] unchanged, skipped")
        else:
            outcomes.append(_run_one(stage, root, fp, seed, log))
            if outcomes[-1].status == "failed":
                stopped = True
        if stage.name == until:
            stopped = True
    return outcomes


def _run_one(stage: Stage, root: Path, fp: str, seed: int, log: Callable[[str], None]) -> StageOutcome:
    out_dir = root / stage.name
    tmp = root / f".{stage.name}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    manifest = new_manifest(stage.name, stage.config, seed=seed, inputs={"fingerprint": fp})
    ctx = StageContext(run_dir=root, out_dir=tmp, upstream={d: root / d for d in stage.deps}, seed=seed)
    log(f"[{stage.name}] running")
    t0 = time.perf_counter()
    try:
        summary = stage.fn(ctx) or {}
    except UserError:
        raise
    except Exception as e:  # keep finished stages; report which stage broke and why
        from sage_dialog.core.redact import redact

        return StageOutcome(stage.name, "failed", time.perf_counter() - t0,
                            error=redact(f"{type(e).__name__}: {e}"))
    seconds = time.perf_counter() - t0
    outputs = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
    finish_manifest(manifest, tmp, outputs=outputs, summary={**summary, "seconds": round(seconds, 2)})
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    log(f"[{stage.name}] done in {seconds:.1f}s")
    return StageOutcome(stage.name, "ran", seconds, summary)


def summary_table(outcomes: Sequence[StageOutcome]) -> str:
    """A plain-text table: stage, status, seconds, and the stage's headline numbers."""
    rows = [("stage", "status", "seconds", "summary")]
    for o in outcomes:
        brief = ", ".join(f"{k}={v}" for k, v in o.summary.items() if not isinstance(v, dict | list))
        rows.append((o.name, o.status, f"{o.seconds:.1f}" if o.status == "ran" else "", o.error or brief[:80]))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)

"""Mixing: dialogs from several files into one trainer-ready SFT set (FORMATS.md section 2).

A data spec (``data_spec.json``) maps files to settings: ``{"a.json": {"prompt": str, "size": int}}``.
The original rules, kept exactly:

1. take the first ``size`` dialogs of each file (all of them when ``size`` is absent), in spec order;
2. prefix ``prompt`` to the value of every gpt turn;
3. drop, with a warning that names the file and the dialog, every dialog that is empty, does not
   alternate human/gpt from a human start, or has turn keys other than ``from``/``value``;
4. shuffle;
5. optionally *blend*: cut every dialog to an even number of turns, then append to each the turns of
   ``K`` (default 2) other dialogs chosen at random, giving longer multi-topic dialogs.

Added here: a ``seed`` for every random choice; ``proportion`` per file (with ``total``: the file
gives ``round(total * p / sum(p))`` dialogs, sampled without replacement, repeated with a warning
when it has fewer); exact-duplicate removal (on by default, before the split so no dialog is in both
halves); a held-out validation split (blended within each half, never across). Files may be
ShareGPT JSON (raw, annotated or chained), or any other dialog format sage-dialog reads (Dialog
JSONL, TRL messages, a LLaMA-Factory folder, transcripts, EmpatheticDialogues, ESConv). Dialogs whose
tags do not parse are dropped with a warning too.

Outputs in the output folder: ``train.jsonl`` / ``valid.jsonl`` (TRL ``messages`` rows),
``llamafactory/`` (``mix.json`` and, with a split, ``mix_valid.json``, plus their
``dataset_info.json`` entries ``data_mix`` / ``data_mix_valid``) and ``manifest.json`` with counts
and warnings.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from tqdm import tqdm

from sage_dialog.core.errors import UserError, where
from sage_dialog.core.io import (
    check_paths,
    finish_manifest,
    format_validation_error,
    new_manifest,
    read_json,
    sha256_path,
)
from sage_dialog.core.outputs import is_own
from sage_dialog.stages.base import StageResult, StageSettings

Record = dict[str, Any]


class SpecEntry(BaseModel):
    """One file of a data spec."""

    model_config = ConfigDict(extra="forbid")
    prompt: str = ""
    size: int | None = Field(None, ge=0, description="take the first SIZE dialogs (all when absent)")
    proportion: float | None = Field(None, gt=0, description="share of the mix (needs total)")


def load_spec(path: str | Path) -> dict[Path, SpecEntry]:
    """A data spec: file paths (relative ones resolved against the spec's folder) -> settings."""
    p = Path(path)
    data = read_json(p)
    if not isinstance(data, dict) or not data:
        raise UserError(f"{p}: expected a JSON object mapping files to {{\"prompt\": ..., \"size\": ...}}")
    out: dict[Path, SpecEntry] = {}
    problems: list[str] = _duplicate_keys(p)
    named: dict[Path, str] = {}
    for name, entry in data.items():
        try:
            e = SpecEntry.model_validate(entry)
        except ValidationError as err:
            problems.extend(format_validation_error(p, repr(name), err))
            continue
        f = Path(name)
        f = f if f.is_absolute() else p.parent / f
        if not f.exists():
            problems.append(f"{where(p, repr(name))}: no such file {f}")
        key = f.resolve()
        if key in named:  # two spellings of one file would silently count as one entry
            problems.append(f"{where(p, repr(name))}: the same file as entry {named[key]!r}; list each file once "
                            "(its size or proportion sets its weight)")
            continue
        named[key] = repr(name)
        out[f] = e
    props = [e.proportion is not None for e in out.values()]
    if any(props) and not all(props):
        problems.append(f"{p}: give a proportion for every file or for none")
    if problems:
        raise UserError(problems)
    return out


def _duplicate_keys(path: Path) -> list[str]:
    """Entries given twice under the same name (JSON keeps only the last one, silently)."""
    top: list[tuple[str, Any]] = []

    def hook(items: list[tuple[str, Any]]) -> dict[str, Any]:
        top[:] = items  # objects are built inside out: the last one built is the top-level one
        return dict(items)

    try:
        json.loads(path.read_text(encoding="utf-8").removeprefix("\ufeff"), object_pairs_hook=hook)
    except (OSError, ValueError):
        return []  # read_json has read it already; nothing more to say
    counts = Counter(name for name, _ in top)
    return [f"{where(path, repr(n))}: entry given {k} times; list each file once (its size or proportion "
            "sets its weight)" for n, k in counts.items() if k > 1]


class Settings(StageSettings):
    """The ``mix`` stage (a run config's ``mix:`` section): how the files of a data spec are mixed."""

    seed: int = Field(0, description="seed of the shuffle, sampling and blending")
    shuffle: bool = Field(True, description="shuffle the mix (--no-shuffle keeps file order)")
    blend: int = Field(0, ge=0, description="K random dialogs appended to each (0: no blending; "
                       "--blend alone means 2, as in the original)")
    valid_fraction: float = Field(0.0, ge=0, lt=1, description="share held out for validation")
    valid_size: int | None = Field(None, ge=0, description="held-out dialogs (overrides valid_fraction)")
    dedup: bool = Field(True, description="drop exact duplicate dialogs (--no-dedup keeps them)")
    even: bool = Field(False, description="cut every dialog to an even number of turns (LLaMA-Factory skips odd ones)")
    total: int | None = Field(None, ge=1, description="mix size when the spec gives proportions")
    name: str = Field("data_mix", description="dataset name in dataset_info.json")


class _MixPaths(BaseModel):
    spec: Path = Field(description="data spec JSON")
    output: Path = Field(description="output folder")


class MixConfig(Settings, _MixPaths):  # the paths' fields come first (pydantic orders fields by the bases)
    """``sage-dialog mix``: the settings plus the data spec and the output folder."""


@dataclass
class Inputs:
    """What the stage reads: the data spec (its files are inputs too)."""

    spec: Path


class Result(StageResult):
    """Outputs: ``train`` (and ``valid``), ``llamafactory``. Counts: train, valid, dropped_invalid,
    dropped_duplicate, turns_train, odd_length, n_warnings. ``warnings``: every warning, in order
    (dropped dialogs, blending, LLaMA-Factory trims; the caller shows them)."""


# ---------------------------------------------------------------------------------------------
# the original rules


def _with_prompt(rec: Any, prompt: str) -> Any:
    """The record with ``prompt`` prefixed to every gpt value (malformed records are left as they are)."""
    if not prompt or not isinstance(rec, dict) or not isinstance(rec.get("conversations"), list):
        return rec
    conv = [
        {**t, "value": prompt + t["value"]} if isinstance(t, dict) and t.get("from") == "gpt" and isinstance(t.get("value"), str) else t
        for t in rec["conversations"]
    ]
    return {**rec, "conversations": conv}


def record_problems(path: Path, index: int, rec: Any) -> list[str]:
    """Why the original would drop this record (plus tags that do not parse); empty when it is kept."""
    from sage_dialog.formats import sharegpt

    problems = sharegpt.record_problems(path, index, rec)
    conv = rec.get("conversations") if isinstance(rec, dict) else None
    if not problems and isinstance(conv, list) and conv[0].get("from") != "human":
        rid = rec.get("id")
        first = conv[0].get("from")
        problems = [f"{where(path, f'{index} ({rid})', 'conversations[0].from')}: must be human, got {first!r}"]
    return problems


def _load_records(path: Path) -> list[Any]:
    """A file's dialogs as ShareGPT records: the raw array of a ShareGPT file (so the original rules
    see it as it is), any other dialog format (Dialog JSONL, TRL messages, a LLaMA-Factory folder,
    transcripts, ...) read with its reader and rendered in its own style."""
    from sage_dialog.formats import detect_format, get_format, read_records, sharegpt

    fmt = detect_format(path)
    if fmt.startswith("sharegpt"):
        return sharegpt.load_array(path)
    if get_format(fmt).kind != "dialog":
        raise UserError(f"{path}: format {fmt} holds no dialogs to mix")
    return [sharegpt.dialog_to_record(d) for d in read_records(path, fmt)]


def _key(rec: Record) -> tuple[tuple[str, str], ...]:
    return tuple((t["from"], t["value"]) for t in rec["conversations"])


def cut_even(rec: Record) -> Record:
    """The record cut to an even number of turns (ending on a gpt turn)."""
    conv = rec["conversations"]
    return {**rec, "conversations": conv[: len(conv) - len(conv) % 2]}


def blend(records: list[Record], k: int, rng: random.Random, warn: Callable[[str], None]) -> list[Record]:
    """Cut every record to an even length, then append the turns of ``k`` other random records to each."""
    pool = []
    for r in records:
        c = cut_even(r)
        if c["conversations"]:
            pool.append(c)
        else:
            warn(f"blend: dialog {r.get('id')!r} has a single turn, nothing left after cutting to an even length; dropped")
    if k > len(pool) - 1:
        if pool:
            warn(f"blend: only {len(pool)} dialogs, appending {max(0, len(pool) - 1)} instead of {k}")
        k = max(0, len(pool) - 1)
    out = []
    for i, base in enumerate(pool):
        # k distinct others without building an O(n) candidate list per dialog: draw from n-1, skip i
        others = [j + (j >= i) for j in rng.sample(range(len(pool) - 1), k)] if k else []
        conv = list(base["conversations"])
        for j in others:
            conv.extend(pool[j]["conversations"])
        out.append({**base, "id": "+".join([str(base.get("id"))] + [str(pool[j].get("id")) for j in others]),
                    "conversations": conv})
    return out


# ---------------------------------------------------------------------------------------------
# the stage


def collect(spec: dict[Path, SpecEntry], *, dedup: bool, total: int | None, rng: random.Random,
            warn: Callable[[str], None], even: bool = False) -> tuple[list[Record], dict[str, dict[str, int]]]:
    """Records of every file after size, prompt, validation, even cut, dedup and proportions (not shuffled)."""
    per_file: dict[str, dict[str, int]] = {}
    seen: set[tuple[tuple[str, str], ...]] = set()
    kept_by_file: list[tuple[Path, SpecEntry, list[Record]]] = []
    for path, entry in spec.items():
        data = _load_records(path)
        taken = data[: entry.size] if entry.size is not None else data
        stats = Counter({"in_file": len(data), "taken": len(taken)})
        kept: list[Record] = []
        # validation is most of the reading time; show it on large files only
        bar = tqdm(taken, desc=f"mix {path.name}", unit="dialog", file=sys.stderr, disable=len(taken) < 5000)
        for i, raw in enumerate(bar, 1):
            rec = _with_prompt(raw, entry.prompt)
            problems = record_problems(path, i, rec)
            if problems:
                stats["dropped_invalid"] += 1
                for line in problems:
                    warn(f"dropped: {line}")
                continue
            if even and len(rec["conversations"]) % 2:
                rec = cut_even(rec)
                stats["cut_to_even"] += 1
                if not rec["conversations"]:
                    stats["dropped_single_turn"] += 1
                    rid = rec.get("id")
                    warn(f"dropped: {where(path, f'{i} ({rid})')}: a single human turn, nothing left at an even length")
                    continue
            if dedup:
                key = _key(rec)
                if key in seen:
                    stats["dropped_duplicate"] += 1
                    continue
                seen.add(key)
            kept.append(rec)
        stats["kept"] = len(kept)
        per_file[str(path)] = dict(stats)
        kept_by_file.append((path, entry, kept))
    if not any(e.proportion is not None for e in spec.values()):
        return [r for _, _, kept in kept_by_file for r in kept], per_file
    if total is None:
        raise UserError("the data spec gives proportions: pass --total N (the size of the mix)")
    psum = sum(e.proportion or 0 for e in spec.values())
    out: list[Record] = []
    for path, entry, kept in kept_by_file:
        want = round(total * (entry.proportion or 0) / psum)
        if not kept and want:
            raise UserError(f"{path}: no usable dialogs, but its proportion asks for {want}")
        if want <= len(kept):
            chosen = rng.sample(kept, want)
        else:
            warn(f"{path}: {len(kept)} usable dialogs for a share of {want}; repeating some")
            chosen = kept * (want // len(kept)) + rng.sample(kept, want % len(kept))
        per_file[str(path)]["in_mix"] = want
        out.extend(chosen)
    return out, per_file


def _remove_stale_valid(out: Path, lf: Path, entry: str) -> None:
    from sage_dialog.core.io import write_json
    from sage_dialog.formats import llamafactory

    for f in (out / "valid.jsonl", lf / "mix_valid.json"):
        f.unlink(missing_ok=True)
    info = llamafactory.read_dataset_info(lf)
    if info.pop(entry, None) is not None:
        write_json(lf / llamafactory.INFO_FILE, info)


def run(settings: Settings, *, inputs: Inputs, out: Path) -> Result:
    """Mix ``inputs.spec`` into the folder ``out`` (TRL JSONL + LLaMA-Factory folder + manifest)."""
    from sage_dialog.formats import llamafactory, sharegpt, trl

    t0 = time.perf_counter()
    cfg = settings
    warnings: list[str] = []
    _warn = warnings.append
    check_paths(inputs=[inputs.spec])
    spec = load_spec(inputs.spec)
    check_paths(inputs=[inputs.spec, *spec], folders=[out])
    # the manifest's config is the command's config as it always was: the settings, the spec and the output
    manifest = new_manifest("mix", {"spec": str(inputs.spec), "output": str(out), **cfg.model_dump(mode="json")},
                            seed=cfg.seed, inputs={str(p): sha256_path(p) for p in [inputs.spec, *spec]})
    rng = random.Random(cfg.seed)
    records, per_file = collect(spec, dedup=cfg.dedup, total=cfg.total, rng=rng, warn=_warn, even=cfg.even)
    if not records:
        raise UserError(f"{inputs.spec}: no usable dialogs in any file")
    if cfg.shuffle:
        rng.shuffle(records)
    n_valid = cfg.valid_size if cfg.valid_size is not None else round(len(records) * cfg.valid_fraction)
    if n_valid >= len(records):
        raise UserError(f"{inputs.spec}: {n_valid} validation dialogs asked of {len(records)} in the mix")
    valid, train = records[:n_valid], records[n_valid:]
    if cfg.blend:
        train = blend(train, cfg.blend, rng, _warn)
        valid = blend(valid, cfg.blend, rng, _warn) if valid else []
    odd = sum(len(r["conversations"]) % 2 for r in train + valid)
    train_d = [sharegpt.record_to_dialog(r) for r in train]
    valid_d = [sharegpt.record_to_dialog(r) for r in valid]
    out.mkdir(parents=True, exist_ok=True)
    trl.write_trl_sft(out / "train.jsonl", train_d)
    lf = out / "llamafactory"
    lf_exports = {"train": llamafactory.write_sft_export(lf, train_d, name=cfg.name, style="auto")}
    outputs = [out / "train.jsonl", lf / llamafactory.SFT_FILE, lf / llamafactory.INFO_FILE]
    named = {"train": out / "train.jsonl", "llamafactory": lf}
    if valid_d:
        trl.write_trl_sft(out / "valid.jsonl", valid_d)
        lf_exports["valid"] = llamafactory.write_sft_export(lf, valid_d, name=f"{cfg.name}_valid",
                                                            file_name="mix_valid.json", style="auto")
        outputs += [out / "valid.jsonl", lf / "mix_valid.json"]
        named["valid"] = out / "valid.jsonl"
    elif is_own(out):  # a previous run's split must not look like part of this one (never a file of someone else)
        _remove_stale_valid(out, lf, f"{cfg.name}_valid")
    for part, e in lf_exports.items():
        if e.trimmed or e.left_out:
            _warn(f"llamafactory/{part}: {e.trimmed} dialogs ending on a human turn were trimmed to end on a gpt "
                  f"turn ({e.turns_trimmed} turns cut), {len(e.left_out)} with no trainable exchange left out "
                  "(LLaMA-Factory's sharegpt loader would skip them; train.jsonl keeps every turn)")
    counts: dict[str, int | float] = {
        "train": len(train_d),
        "valid": len(valid_d),
        "dropped_invalid": sum(f.get("dropped_invalid", 0) for f in per_file.values()),
        "dropped_duplicate": sum(f.get("dropped_duplicate", 0) for f in per_file.values()),
        "turns_train": sum(len(d.turns) for d in train_d),
        "odd_length": odd,
        "n_warnings": len(warnings),
    }
    result = Result(outputs=named, counts=counts, warnings=warnings, seconds=time.perf_counter() - t0)
    summary = {
        "train": counts["train"],
        "valid": counts["valid"],
        "files": per_file,
        "dropped_invalid": counts["dropped_invalid"],
        "dropped_duplicate": counts["dropped_duplicate"],
        "turns_train": counts["turns_train"],
        "odd_length": odd,
        "llamafactory": {k: e.summary() for k, e in lf_exports.items()},
        "warnings": warnings[:200],
        "n_warnings": len(warnings),
    }
    finish_manifest(manifest, out, outputs=[str(p) for p in outputs], summary=summary)
    return result

"""The compare stage: play dialogs with several models, judge them pairwise, report with statistics.

Two entry points:

* :func:`run` is the stage in the one shape (:mod:`sage_dialog.stages.base`): :class:`Settings`,
  :class:`Inputs` (models as backend specs, existing dialog files, the seeds), :class:`Result`; the
  ``sage-dialog compare`` command (from a :class:`CompareConfig`: the settings plus inputs and output)
  and the pipeline call it. It loads the models or dialog files, the user simulator and the judges
  (backend specs or ``"oracle"``), plays dialogs from the same seeds, and calls :func:`run_compare`.
* :func:`run_compare` takes objects (dialogs per model, judge objects) so the demo can pass oracles.

For each seed and each pair of models every judge sees the two dialogs, tags stripped, in both
orders. Outputs in ``out_dir``:

``verdicts.jsonl``                       every :class:`~sage_dialog.core.schema.Verdict`
``dialogs/<model>.jsonl``                the dialogs that were judged (tags kept)
``judgements/<a>__vs__<b>/``             the original SAGE judge output files (one per judge and
                                         order, ``*_rev.json`` for the swapped order) and the
                                         original ``combined_predictions.tsv`` /
                                         ``consensus_predictions.tsv`` made from them
``judge_trust.json``                     each judge's injection canaries and repeat stability
                                         (:mod:`.trust`), ``judge_trust_verdicts.jsonl`` their verdicts
``summary.json``, ``report.md``, ``report.html``, ``manifest.json``

Verdicts are journaled as they come (``verdicts.partial.jsonl``), so a killed run resumes without
asking the judges again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field, InstanceOf

from sage_dialog.backends.base import Backend, BackendConfig, SamplingParams
from sage_dialog.core import io, sac
from sage_dialog.core.errors import UserError
from sage_dialog.core.schema import Dialog, Turn, Verdict
from sage_dialog.formats.judgements import Label
from sage_dialog.roles.factory import BackendPool, make_pairwise_judge, make_user
from sage_dialog.roles.protocols import PairTask, PairwiseJudge
from sage_dialog.roles.sampling import COMPARE_SAMPLING, SamplingConfig, defaults_from
from sage_dialog.stages.base import StageResult, StageSettings
from sage_dialog.stages.compare import trust
from sage_dialog.stages.compare.report import TRUST_FILE, Report, build_report

# ---------------------------------------------------------------------------------------------
# config


# compare's own defaults (plain sampling at 0.7) for the keys a config's `sampling` leaves out
CompareSampling = Annotated[SamplingConfig, BeforeValidator(defaults_from(COMPARE_SAMPLING))]


class Settings(StageSettings):
    """The compare stage (a run config's ``compare:`` section): who plays the user, who judges, how.

    ``user`` and each of ``judges`` are a backend spec or ``"oracle"``.
    """

    max_seeds: int | None = Field(None, description="use only the first N seeds")
    user: str | BackendConfig = Field("oracle", description="user simulator: backend spec or 'oracle'")
    user_persona: str | None = Field(None, description="user persona prompt file")
    judges: list[str | BackendConfig] = Field(default_factory=lambda: ["oracle"],  # type: ignore[arg-type]
                                              description="judge: backend spec or 'oracle' (repeat for several "
                                              "judges; default: oracle)")
    judge_mode: Literal["generate", "score"] = Field("generate", description="generate: parse 'Dialog X is better' "
                                                     "/ 'Tie'; score: most likely option")
    turns: int = Field(3, ge=1, description="assistant turns per dialog")
    system_prompt: str | None = Field(None, description="system prompt of the models playing dialogs")
    sampling: CompareSampling = Field(default_factory=COMPARE_SAMPLING.model_copy)
    per_turn: bool = Field(False, description="also judge every model's reply to the same user turns")
    canaries: bool = Field(True, description="judge the injection canaries too (24 extra verdicts per judge: how "
                           "often an instruction inside a reply sways the judge)")
    stability_sample: int = Field(8, ge=0, description="verdicts asked again (paraphrased prompt, or a second "
                                  "sample) to measure how often a judge changes its mind; 0: off")
    bootstrap: int = Field(2000, ge=100, description="bootstrap resamples")
    seed: int = Field(0, description="random seed for sampling and the bootstrap")
    title: str = Field("Model comparison", description="report title")
    cache: str | None = Field(None, description="SQLite response cache shared by all model calls")
    backend_options: dict[str, Any] = Field(default_factory=dict, description="constructor options of every "
                                            "in-process (hf:) user and judge given as a spec, e.g. dtype=fast; "
                                            "a loop passes its own")
    threads: int | None = Field(None, ge=1, description="CPU threads for torch/BLAS (default: OMP_NUM_THREADS, "
                                "else the cores not busy now, at least 1)")


class _CompareInputs(BaseModel):
    out: str = Field("compare-out", description="output folder")
    models: dict[str, str | BackendConfig] = Field(default_factory=dict, description="a model to play dialogs "
                                                   "with: NAME=SPEC (repeat)")
    dialogs: dict[str, str] = Field(default_factory=dict, description="existing dialogs of a model: NAME=PATH, a "
                                    "dialogs JSONL or a folder of .txt transcripts (repeat)")
    seeds: str | None = Field(None, description="seed file: one opening user utterance per line, .jsonl, or ED .csv")


class CompareConfig(Settings, _CompareInputs):  # out and the inputs come first (pydantic orders fields by the bases)
    """What ``sage-dialog compare`` runs (YAML keys; ``--set key=value`` overrides them): the settings plus
    the models, dialogs and seeds (:class:`Inputs`) and the output folder.

    ``models`` maps a display name to a backend spec (``hf:PATH``, ``openai:MODEL``...) or a full
    backend config; ``dialogs`` maps a name to an existing file of dialogs (JSONL of Dialog
    records, as written in ``dialogs/``) or a folder of original ``.txt`` transcripts. Both may be mixed; at least two models in all.
    """

    def inputs(self) -> Inputs:
        return Inputs(models=dict(self.models), dialogs={k: Path(v) for k, v in self.dialogs.items()},
                      seeds=Path(self.seeds) if self.seeds is not None else None)


@dataclasses.dataclass
class Inputs:
    """The models to compare: backend specs that play dialogs from ``seeds``, and/or files of dialogs."""

    models: dict[str, str | BackendConfig] = dataclasses.field(default_factory=dict)
    dialogs: dict[str, Path] = dataclasses.field(default_factory=dict)
    seeds: Path | None = None


class Result(StageResult):
    """``report``: the :class:`~sage_dialog.stages.compare.report.Report`. Counts: models, the verdict counts
    (verdicts, parsed, unparsed...) and the least order-consistent judge's counts (``notes``: its figures).
    Usage: the backends' ledger totals (``tokens_per_s`` among them)."""

    report: InstanceOf[Report]


# ---------------------------------------------------------------------------------------------
# helpers


def strip_dialog(d: Dialog) -> Dialog:
    """A copy with every tag block removed from the text and the typed tags dropped."""
    turns = [Turn(role=t.role, text=sac.strip(t.text).strip()) for t in d.turns]
    return d.model_copy(update={"turns": turns})


def seed_key(d: Dialog) -> str:
    """What identifies the seed a dialog was played from: ``meta.seed`` or its first user turn."""
    s = d.meta.get("seed")
    if isinstance(s, str) and s:
        return s
    first = next((t.text for t in d.turns if t.role == "user"), None)
    return first if first is not None else d.id


def safe_name(name: str) -> str:
    """A model or judge name as a file name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "model"


def pair_folder(a: str, b: str) -> str:
    return f"{safe_name(a)}__vs__{safe_name(b)}"


def _judge_file_stem(judge: str) -> str:
    # "rev" in a name means "swapped order" to the original analysis: keep it out of judge names
    stem = safe_name(judge)
    return re.sub(r"rev", "r_e_v", stem, flags=re.IGNORECASE)


def task_key(judge: str, t: PairTask) -> str:
    """What a verdict answers: the judge, the pair, the order and the very texts shown.

    Resuming matches on this, so a journal left by a run whose dialogs came out differently (no
    cache, a changed model) is not mistaken for this run's verdicts.
    """
    return io.stable_hash([judge, t.seed, t.model_a, t.model_b, t.swap, t.unit, t.turn,
                           [(x.role, x.text) for x in t.a], [(x.role, x.text) for x in t.b]])


def align_seeds(dialogs_by_model: dict[str, list[Dialog]]) -> tuple[list[str], dict[str, dict[str, Dialog]]]:
    """Seeds every model has a dialog for (in the first model's order), and dialogs by seed."""
    by_model: dict[str, dict[str, Dialog]] = {}
    for m, ds in dialogs_by_model.items():
        by_model[m] = {}
        for d in ds:
            by_model[m].setdefault(seed_key(d), d)
    first = next(iter(dialogs_by_model))
    common = [s for s in by_model[first] if all(s in by_model[m] for m in by_model)]
    if not common:
        raise UserError("compare: the models' dialogs share no seed (first user turn or meta.seed); nothing to judge")
    return common, by_model


def dialog_tasks(models: Sequence[str], seeds: Sequence[str], by_model: dict[str, dict[str, Dialog]]) -> list[PairTask]:
    """One task per seed, pair of models and order (the swapped order shows ``b`` first)."""
    tasks = []
    for ma, mb in itertools.combinations(models, 2):
        for s in seeds:
            a, b = by_model[ma][s].turns, by_model[mb][s].turns
            for swap in (False, True):
                tasks.append(PairTask(seed=s, model_a=ma, model_b=mb, a=a, b=b, swap=swap))
    return tasks


async def turn_tasks(backends: dict[str, Backend], contexts: Sequence[Dialog], *, sampling: SamplingParams,
                     system_prompt: str | None = None) -> list[PairTask]:
    """Per-turn mode: every model replies to the same user turns; one task per pair and order.

    The histories are those of ``contexts`` (dialogs of one model), cut before each assistant turn.
    """
    from sage_dialog.backends.base import ChatRequest
    from sage_dialog.core.prompts import derive_seed
    from sage_dialog.roles.rollout import history_messages, parse_assistant

    histories: list[tuple[str, int, list[Turn]]] = []
    for d in contexts:
        for k, t in enumerate(d.turns):
            if t.role == "assistant" and k > 0:
                histories.append((seed_key(d), k, list(d.turns[:k])))
    replies: dict[str, list[Turn]] = {}
    for m, be in backends.items():
        reqs = [ChatRequest(messages=history_messages(h, system_prompt), n=1,
                            sampling=dataclasses.replace(sampling, seed=derive_seed("per-turn", s, k)))
                for s, k, h in histories]
        res = await be.generate(reqs)
        replies[m] = [parse_assistant(r.completions[0].text if r.completions else "") for r in res]
    tasks = []
    for ma, mb in itertools.combinations(list(backends), 2):
        for i, (s, k, h) in enumerate(histories):
            ra, rb = replies[ma][i], replies[mb][i]
            a = [*h, Turn(role="assistant", text=sac.strip(ra.text).strip())]
            b = [*h, Turn(role="assistant", text=sac.strip(rb.text).strip())]
            for swap in (False, True):
                tasks.append(PairTask(seed=s, model_a=ma, model_b=mb, a=a, b=b, swap=swap, unit="turn", turn=k))
    return tasks


async def judge_all(judges: Sequence[PairwiseJudge], tasks: Sequence[PairTask], journal_path: Path,
                    *, chunk: int = 64, progress: bool = True) -> list[Verdict]:
    """Every judge on every task, journaled so a re-run only asks for what is missing."""
    from tqdm import tqdm

    journal = io.JsonlJournal(journal_path)
    done: dict[str, Verdict] = {}
    for rec in journal.load():
        if isinstance(rec, dict) and "key" in rec:
            done[rec["key"]] = Verdict.model_validate(rec["verdict"])
    keys = {id(j): [task_key(j.name, t) for t in tasks] for j in judges}
    todo = {id(j): [(k, t) for k, t in zip(keys[id(j)], tasks, strict=True) if k not in done] for j in judges}
    bar = tqdm(total=sum(len(v) for v in todo.values()), desc="judging", unit="verdict", disable=not progress)
    from sage_dialog.backends import progress as ticks

    meter = ticks.Meter(bar)
    try:
        with ticks.listen(meter):  # the postfix moves with every request and token inside a chunk
            for j in judges:
                mine = todo[id(j)]
                for i in range(0, len(mine), chunk):
                    part = mine[i:i + chunk]
                    verdicts = await j.compare([t for _, t in part])
                    if len(verdicts) != len(part):
                        raise RuntimeError(f"judge {j.name} returned {len(verdicts)} verdicts for {len(part)} tasks")
                    for (k, _), v in zip(part, verdicts, strict=True):
                        v = v.model_copy(update={"judge": j.name})
                        done[k] = v
                        journal.append({"key": k, "verdict": v.model_dump(mode="json", exclude_none=True)})
                    bar.update(len(part))
        meter.close()
    finally:
        bar.close()
        journal.close()
    return [done[k] for j in judges for k in keys[id(j)]]


def write_original_judgements(verdicts: Sequence[Verdict], out_dir: Path) -> list[Path]:
    """The original SAGE judge output files and TSVs, one folder per pair of models.

    ``<judge>.json`` holds the verdicts shown in the order (a, b), ``<judge>_rev.json`` the swapped
    order; each is ``[{"label": transcript file name, "predict": raw judge text}]``. The TSVs are
    then made from these files by the original rule (:mod:`sage_dialog.formats.judgements`).
    """
    from sage_dialog.formats.judgements import JudgeOutput, read_judgement_dir, write_judge_output
    from sage_dialog.formats.transcripts import transcript_name

    folders: dict[tuple[str, str], dict[str, list[JudgeOutput]]] = {}
    for v in verdicts:
        if v.unit != "dialog":
            continue  # the original analysis knows whole dialogs only
        name = _judge_file_stem(v.judge) + ("_rev" if v.shown_first == "b" else "") + ".json"
        folders.setdefault((v.model_a, v.model_b), {}).setdefault(name, []).append(
            JudgeOutput(label=transcript_name(v.seed), predict=v.raw_output))
    out = []
    for (ma, mb), files in folders.items():
        d = out_dir / "judgements" / pair_folder(ma, mb)
        for name, items in files.items():
            write_judge_output(d / name, items)
        write_original_tsvs(read_judgement_dir(d), d)
        out.append(d)
    return out


async def measure_trust(judges: Sequence[PairwiseJudge], tasks: Sequence[PairTask], verdicts: Sequence[Verdict],
                        out: Path, *, canaries: bool = True, stability_sample: int = 8,
                        progress: bool = True) -> list[trust.JudgeTrust]:
    """Each judge's canary and stability figures (:mod:`.trust`); writes ``judge_trust.json`` and
    the verdicts behind it. ``verdicts`` are :func:`judge_all`'s answers to ``tasks`` (judges x tasks)."""
    labelled = trust.canary_tasks() if canaries else []
    ctasks = [t for _, _, t in labelled]
    sample = trust.stability_sample(tasks, stability_sample)
    repeats = [trust.repeat_judge(j) for j in judges]
    can_v = await judge_all(judges, ctasks, out / "judge_trust.canaries.partial.jsonl", progress=progress) \
        if ctasks else []
    rep_v = await judge_all([r for r, _ in repeats], [tasks[i] for i in sample],
                            out / "judge_trust.repeat.partial.jsonl", progress=progress) if sample else []
    results, evidence = [], []
    nc, ns = len(ctasks), len(sample)
    for ji, j in enumerate(judges):
        mine = can_v[ji * nc:(ji + 1) * nc]
        t = trust.canary_trust(j.name, labelled, mine)
        first = [verdicts[ji * len(tasks) + i] for i in sample]
        again = rep_v[ji * ns:(ji + 1) * ns]
        results.append(trust.add_stability(t, repeats[ji][1], first, again) if sample else t)
        evidence += [{"check": "canary", "canary": key, "kind": kind, "verdict": v.model_dump(mode="json", exclude_none=True)}
                     for (key, kind, _), v in zip(labelled, mine, strict=True)]
        evidence += [{"check": "repeat", "method": repeats[ji][1], "first": a.model_dump(mode="json", exclude_none=True),
                      "again": b.model_dump(mode="json", exclude_none=True)} for a, b in zip(first, again, strict=True)]
    io.write_jsonl(out / "judge_trust_verdicts.jsonl", evidence)
    io.write_json(out / TRUST_FILE, {"canaries": len(trust.CANARIES), "injections": list(trust.INJECTIONS),
                                     "judges": [t.to_dict() for t in results]})
    for name in ("judge_trust.canaries.partial.jsonl", "judge_trust.repeat.partial.jsonl"):
        (out / name).unlink(missing_ok=True)
    return results


# ---------------------------------------------------------------------------------------------
# the original SAGE analysis of judge output files (the rule itself is in formats.judgements)


def write_original_tsvs(preds: Mapping[str, Mapping[str, Label]], out_dir: str | Path) -> tuple[Path, Path]:
    """``combined_predictions.tsv`` and ``consensus_predictions.tsv`` exactly as the original writes them."""
    from sage_dialog.formats.judgements import write_combined_tsv, write_consensus_tsv

    out = Path(out_dir)
    return (write_combined_tsv(out / "combined_predictions.tsv", preds),
            write_consensus_tsv(out / "consensus_predictions.tsv", preds))


def _judge_of_file(name: str) -> str:
    """A judgement file's judge: its stem without the ``rev`` marker, so both orders pair up."""
    stem = name.removesuffix(".json")
    return re.sub(r"[._-]?rev(?=$|[._-])|^rev[._-]?", "", stem, count=1) or stem


def original_verdicts(folder: str | Path, preds: Mapping[str, Mapping[str, Label]]) -> list[Verdict]:
    """Verdicts (model ``A`` against model ``B``) from original judge files, one file = one judge
    in one order; ``M`` becomes a tie when the answer says so, else an unparsed verdict."""
    from sage_dialog.formats.judgements import is_reversed, read_judge_output
    from sage_dialog.roles.pairwise_judge import parse_answer

    judges = {n: _judge_of_file(n) for n in preds}
    keys = [(j, is_reversed(n)) for n, j in judges.items()]
    if len(set(keys)) != len(keys):  # two files would pose as the same judge and order
        judges = {n: n.removesuffix(".json") for n in preds}
    out = []
    for name, letters in preds.items():
        raw = {o.label: o.predict for o in read_judge_output(Path(folder) / name)}
        rev = is_reversed(name)
        for lab, letter in letters.items():
            if lab not in raw:
                continue
            winner = {"A": "a", "B": "b"}.get(letter) or ("tie" if parse_answer(raw[lab]) == "tie" else None)
            out.append(Verdict(seed=lab, model_a="A", model_b="B", judge=judges[name],
                               shown_first="b" if rev else "a", winner=winner, parsed=winner is not None,  # type: ignore[arg-type]
                               raw_output=raw[lab]))
    return out


# ---------------------------------------------------------------------------------------------
# the Python API


async def arun_compare(
    dialogs_by_model: dict[str, list[Dialog]],
    judges: Sequence[PairwiseJudge],
    out_dir: str | Path,
    *,
    turn_backends: dict[str, Backend] | None = None,
    sampling: SamplingParams | None = None,
    system_prompt: str | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    title: str = "Model comparison",
    config: dict[str, Any] | None = None,
    progress: bool = True,
    ledger: Any = None,
    canaries: bool = True,
    stability_sample: int = 8,
) -> Report:
    """Judge every pair of models on every shared seed, in both orders, by every judge; report.

    ``dialogs_by_model`` are matched by seed (``meta.seed`` or the first user turn); tags are
    stripped before judging. With ``turn_backends`` (model name -> backend, same names), the
    per-turn mode runs too: each model replies to the user turns of the first model's dialogs.
    ``ledger`` (a :class:`~sage_dialog.backends.ledger.Ledger` the backends were tracked by) puts the
    stage's usage, tokens/s included, into the manifest. ``canaries`` and ``stability_sample`` add
    each judge's trust figures (:func:`measure_trust`).
    """
    if len(dialogs_by_model) < 2:
        raise UserError(f"compare: need at least two models, got {len(dialogs_by_model)}")
    if not judges:
        raise UserError("compare: need at least one judge")
    if len({j.name for j in judges}) != len(judges):
        raise UserError("compare: judges must have distinct names")
    out = Path(out_dir)
    models = list(dialogs_by_model)
    if len({safe_name(m) for m in models}) != len(models):
        raise UserError(f"compare: model names {models} collide as file names; make them differ in letters or digits")
    if turn_backends and set(models) - set(turn_backends):
        raise UserError("compare: per-turn mode needs a backend for every model; "
                        f"missing {sorted(set(models) - set(turn_backends))}")
    stripped = {m: [strip_dialog(d) for d in ds] for m, ds in dialogs_by_model.items()}
    seeds, by_model = align_seeds(stripped)  # checks before anything is written
    manifest = io.new_manifest("compare", config or {}, seed=seed)
    for m, ds in dialogs_by_model.items():
        io.write_jsonl(out / "dialogs" / f"{safe_name(m)}.jsonl", ds)
    tasks = dialog_tasks(models, seeds, by_model)
    if turn_backends:
        contexts = [by_model[models[0]][s] for s in seeds]
        tasks += await turn_tasks({m: turn_backends[m] for m in models}, contexts,
                                  sampling=sampling or SamplingParams(temperature=0.0, max_tokens=128),
                                  system_prompt=system_prompt)
    verdicts = await judge_all(judges, tasks, out / "verdicts.partial.jsonl", progress=progress)
    io.write_jsonl(out / "verdicts.jsonl", verdicts)
    write_original_judgements(verdicts, out)
    # always written (empty when both checks are off), so an earlier run's figures never pass for this one's
    await measure_trust(judges, tasks, verdicts, out, canaries=canaries, stability_sample=stability_sample,
                        progress=progress)
    report = build_report(out, models=models, verdicts=verdicts, dialogs=stripped, n_boot=n_boot, seed=seed,
                          title=title)
    (out / "verdicts.partial.jsonl").unlink(missing_ok=True)
    io.finish_manifest(manifest, out, outputs=[str(p.relative_to(out)) for p in sorted(out.rglob("*")) if p.is_file()],
                       summary={"models": models, "seeds": len(seeds), **report.verdict_counts(),
                                "judges": [j.name for j in judges]},
                       usage=ledger.to_dict()["totals"] if ledger is not None else {})
    return report


def run_compare(dialogs_by_model: dict[str, list[Dialog]], judges: Sequence[PairwiseJudge], out_dir: str | Path,
                **kw: Any) -> Report:
    """Synchronous wrapper of :func:`arun_compare` (for scripts, the pipeline and the demo)."""
    return asyncio.run(arun_compare(dialogs_by_model, judges, out_dir, **kw))


# ---------------------------------------------------------------------------------------------
# from a config


def read_dialogs(path: str | Path) -> list[Dialog]:
    """Dialogs to compare: a JSONL file of Dialog records or a folder of original transcripts."""
    p = Path(path)
    if p.is_dir():
        from sage_dialog.formats.transcripts import read_transcript_dir

        return read_transcript_dir(p)
    return list(io.read_jsonl(p, Dialog))


async def _arun(cfg: Settings, inputs: Inputs, out: Path, progress: bool = True) -> tuple[Report, dict[str, Any]]:
    from sage_dialog.roles.rollout import play_dialogs

    names = list(inputs.models) + list(inputs.dialogs)
    if len(set(names)) != len(names):
        raise UserError("compare: a model name is used in both 'models' and 'dialogs'")
    if len(names) < 2:
        raise UserError("compare: give at least two models (models: NAME=SPEC and/or dialogs: NAME=FILE)")
    if inputs.models and inputs.seeds is None:
        raise UserError("compare: 'seeds' (a file of opening user utterances) is needed to play dialogs")
    # inputs and the output folder are checked before any model loads
    io.check_paths(inputs=[*inputs.dialogs.values(), inputs.seeds if inputs.models else None], folders=[out])
    dialogs_by_model: dict[str, list[Dialog]] = {}
    for name in names:
        dialogs_by_model[name] = read_dialogs(inputs.dialogs[name]) if name in inputs.dialogs else []
    from sage_dialog.backends.ledger import Ledger

    ledger = Ledger("compare")
    pool = BackendPool(cfg.cache, cfg.backend_options, ledger=ledger)
    try:
        backends = {name: pool.get(spec) for name, spec in inputs.models.items()}
        judges = [make_pairwise_judge(j, pool, mode=cfg.judge_mode) for j in cfg.judges]
        if backends:
            from sage_dialog.stages.search.seeds import read_seed_file

            seeds = read_seed_file(inputs.seeds or Path(""))[: cfg.max_seeds]
            from sage_dialog.core.prompts import load_prompt

            persona = load_prompt(cfg.user_persona) if cfg.user_persona else None
            user = make_user(cfg.user, pool, persona=persona, seed=cfg.seed)
            from tqdm import tqdm

            from sage_dialog.backends import progress as ticks

            # progress per assistant reply, and per request and token inside a slow reply round
            bar = tqdm(total=len(backends) * len(seeds) * cfg.turns, desc="dialogs", unit="reply",
                       disable=not progress)
            meter = ticks.Meter(bar)
            try:
                with ticks.listen(meter):
                    for name, be in backends.items():
                        bar.set_description(f"dialogs {name}")
                        dialogs_by_model[name] = await play_dialogs(be, user, seeds, turns=cfg.turns,
                                                                    sampling=cfg.sampling.params(),
                                                                    system_prompt=cfg.system_prompt, seed=cfg.seed,
                                                                    on_replies=bar.update)
                meter.close()
            finally:
                bar.close()
        turn_backends = None
        if cfg.per_turn:
            if set(backends) != set(names):
                raise UserError("compare: per_turn needs every model as a backend (not a dialogs file)")
            turn_backends = backends
        # the manifest's config is the command's config as it always was: the settings, inputs and output
        config = {"out": str(out), "models": {k: v if isinstance(v, str) else v.model_dump(mode="json")
                                              for k, v in inputs.models.items()},
                  "dialogs": {k: str(v) for k, v in inputs.dialogs.items()},
                  "seeds": str(inputs.seeds) if inputs.seeds is not None else None, **cfg.model_dump(mode="json")}
        report = await arun_compare(dialogs_by_model, judges, out, turn_backends=turn_backends,
                                    sampling=cfg.sampling.params(), system_prompt=cfg.system_prompt,
                                    n_boot=cfg.bootstrap, seed=cfg.seed, title=cfg.title,
                                    config=config, progress=progress, ledger=ledger,
                                    canaries=cfg.canaries, stability_sample=cfg.stability_sample)
        return report, ledger.to_dict()["totals"]
    finally:
        await pool.aclose()


def run(settings: Settings, *, inputs: Inputs, out: Path, progress: bool = True) -> Result:
    """Play, judge and report into the folder ``out`` (see the module docstring)."""
    t0 = time.perf_counter()
    if settings.threads is not None:
        from sage_dialog.core import threads

        threads.apply(settings.threads)
    report, usage = asyncio.run(_arun(settings, inputs, out, progress))
    trusted = report.trust_counts()
    return Result(report=report, usage=usage, seconds=time.perf_counter() - t0,
                  counts={"models": len(report.models), **report.verdict_counts(),
                          **{k: v for k, v in trusted.items() if not isinstance(v, str)}},
                  notes={k: v for k, v in trusted.items() if isinstance(v, str)},
                  outputs={"report": report.markdown_path, "html": report.html_path, "verdicts": out / "verdicts.jsonl"})


def analyse_judgements(judgements_dir: str | Path, out_dir: str | Path, *, n_boot: int = 2000,
                       seed: int = 0, title: str = "Analysis of original judgement files") -> Report:
    """Analyse a folder of original SAGE judge output files (``sage-dialog compare --judgements``).

    Writes the original ``combined_predictions.tsv`` and ``consensus_predictions.tsv`` to
    ``out_dir`` (the original wrote them into the input folder) plus the report, treating each
    file as one judge in one order, "Dialog A" as model ``A`` and "Dialog B" as model ``B``.
    """
    src, out = Path(judgements_dir), Path(out_dir)
    from sage_dialog.formats.judgements import read_judgement_dir

    preds = read_judgement_dir(src)
    verdicts = original_verdicts(src, preds)
    write_original_tsvs(preds, out)
    io.write_jsonl(out / "verdicts.jsonl", verdicts)
    return build_report(out, models=["A", "B"], verdicts=verdicts, dialogs=None, n_boot=n_boot, seed=seed,
                        title=title)

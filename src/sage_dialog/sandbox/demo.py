"""``sage-dialog demo``: the whole SAGE loop, offline, on the sandbox world, with a measured result.

Every stage runs through the same Python API a real run uses; only the roles other than the
assistant are the world's oracles (:mod:`.oracles`) and the base model is a tiny Llama trained from
scratch (:mod:`.tiny_model`):

 1. ``corpus``   raw dialogs from the world, good and clumsy assistant behaviour mixed
 2. ``annotate`` :func:`sage_dialog.stages.annotate.run` with the oracle annotator (reads the text)
 3. ``chain``    :func:`sage_dialog.stages.chain.chain_file`: annotated -> State-Action Chain dialogs
 4. ``mix``      :func:`sage_dialog.stages.mix.run`: the SFT set (TRL messages + LLaMA-Factory export)
 5. ``sft``      a tokenizer and a small Llama built on the corpus, then
                 :func:`sage_dialog.train.sft.train_sft` (full fine-tuning) -> **M1**
 6. ``search``   :func:`sage_dialog.stages.search.search.run_search`: M1 samples N replies per turn, the
                 oracle selector keeps the best, the oracle user answers
 7. ``prefs``    :func:`sage_dialog.stages.prefs.run_prefs`: kept-vs-dropped pairs and best paths
 8. ``rft``      SFT of M1 on the best paths (a rejection-sampling round) -> **M2**
 9. ``dpo``      :func:`sage_dialog.train.dpo.train_dpo` from M2 on the pairs -> **DPO**
10. ``eval``     :func:`sage_dialog.stages.search.rollout.play_dialogs` of every model from held-out
                 seeds against the oracle user; ground-truth reward per dialog
11. ``compare``  :func:`sage_dialog.stages.compare.compare.run_compare` with the oracle pairwise judge
12. ``steer``    :func:`sage_dialog.stages.steerability.measure`: M1 with each action forced by prefill,
                 the oracle action classifier reading the reply

With ``user="model"`` a ``user`` stage trains a second tiny model with the roles flipped
(:func:`flipped_conversations`) and it plays the user (``LLMUserSimulator``) in search and eval.

It ends with a table (``results.md`` / ``results.json`` in the output folder): ground-truth reward
of each model (mean and 95% bootstrap interval over the held-out seeds), the paired difference to
M1 with its interval, judge win rates against M1 and M1's steering compliance. A finished stage
(``<stage>/.done``) is skipped when the demo is run again on the same folder with the same settings.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sage_dialog.core import io
from sage_dialog.core.errors import UserError
from sage_dialog.core.schema import Dialog
from sage_dialog.sandbox import corpus, world
from sage_dialog.sandbox.oracles import OracleActionClassifier, oracle_for


class DemoConfig(BaseModel):
    """Sizes and settings of the demo. :meth:`quick` is the CI-sized variant."""

    model_config = ConfigDict(extra="forbid")
    seed: int = 0
    threads: int = Field(default=1, ge=1, description="torch CPU threads (1: the matrices are tiny, a second thread gains little and loses much when the cores are shared)")
    user: Literal["oracle", "model"] = Field(
        default="oracle", description="who plays the user in search and evaluation: the scripted oracle, or a "
        "tiny model trained on the corpus with the roles flipped (LLMUserSimulator)")
    # corpus
    n_dialogs: int = 600
    good_rate: float = 0.4
    tempting_rate: float = 0.35
    # tiny model
    hidden_size: int = 128
    num_layers: int = 2
    vocab_size: int = 800
    # M1
    sft_epochs: float = 5.0
    sft_lr: float = 2e-3
    batch_size: int = 8
    # search
    search_seeds: int = 96
    search_turns: int = 3
    candidates: int = 4
    search_temperature: float = 1.0
    # M2 (rejection-sampling fine-tuning) and DPO
    rft_epochs: float = 4.0
    rft_lr: float = 2e-3
    dpo_epochs: float = 2.0
    dpo_lr: float = 5e-4
    dpo_beta: float = 0.1
    dpo_sft_weight: float = 1.0
    min_margin: float = 0.5
    negatives: int | None = Field(default=None, description="rejected candidates per decision (all: None)")
    # evaluation
    eval_seeds: int = 64
    eval_turns: int = 4
    eval_temperature: float = 0.7
    steer_contexts: int = 16
    n_boot: int = 2000

    @classmethod
    def quick(cls, **kw: Any) -> DemoConfig:
        """A shortened demo (about a third of the work) for CI."""
        base: dict[str, Any] = dict(n_dialogs=400, sft_epochs=4.0, search_seeds=48, eval_seeds=48,
                                    steer_contexts=10, n_boot=1000)
        return cls(**{**base, **kw})


# ---------------------------------------------------------------------------------------------
# statistics


def bootstrap_mean(values: Sequence[float], n_boot: int, seed: int) -> tuple[float, float, float]:
    """Mean and 95% percentile bootstrap interval of ``values``."""
    import numpy as np

    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(x.mean()), float(lo), float(hi)


# ---------------------------------------------------------------------------------------------
# stages


class _Runner:
    """Runs the stages in order, skipping finished ones, and keeps their timings."""

    def __init__(self, out: Path, cfg: DemoConfig, log: Callable[[str], None]):
        self.out, self.cfg, self.log = out, cfg, log
        self.timings: dict[str, float] = {}
        self.n_stages = 12
        self.i = 0

    def stage(self, name: str, fn: Callable[[Path], Any]) -> Path:
        self.i += 1
        d = self.out / name
        done = d / ".done"
        if done.exists():
            self.log(f"[{self.i:2}/{self.n_stages}] {name}: done before, skipped")
            self.timings[name] = json.loads(done.read_text())["seconds"]
            return d
        d.mkdir(parents=True, exist_ok=True)
        self.log(f"[{self.i:2}/{self.n_stages}] {name} ...")
        t0 = time.perf_counter()
        fn(d)
        dt = time.perf_counter() - t0
        self.timings[name] = dt
        io.write_json(done, {"seconds": dt})
        self.log(f"[{self.i:2}/{self.n_stages}] {name}: {dt:.1f}s")
        return d


def _sft_config(model: Path, data: Path, out: Path, *, epochs: float, lr: float, batch: int, seed: int) -> Any:
    from sage_dialog.train.config import SFTRunConfig

    return SFTRunConfig.model_validate({
        "model": {"name_or_path": str(model)},
        "adapter": {"method": "full"},
        "data": {"train": str(data), "max_length": 512},
        "train": {"epochs": epochs, "learning_rate": lr, "batch_size": batch, "warmup_ratio": 0.05,
                  "logging_steps": 25, "save_total_limit": 1, "device": "cpu", "seed": seed},
        "output_dir": str(out),
    })


def _backend(path: Path) -> Any:
    from sage_dialog.backends.base import BackendConfig, load_backend

    return load_backend(BackendConfig(spec=f"hf:{path}", options={"batch_size": 64, "device": "cpu"}))


def _final_model(d: Path) -> Path:
    return d / "model"


def run_demo(out_dir: str | Path, cfg: DemoConfig | None = None, *, log: Callable[[str], None] | None = None,
             progress: bool = True) -> dict[str, Any]:
    """Run the demo into ``out_dir`` and return the results (also written to ``results.json``)."""
    cfg = cfg or DemoConfig()
    out = Path(out_dir)
    say = log or (lambda m: print(m, file=sys.stderr, flush=True))
    _quiet_libraries()
    import torch

    torch.set_num_threads(cfg.threads)
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / "demo_config.json"
    if cfg_path.exists():
        try:  # settings added since that demo ran take their defaults
            same = DemoConfig.model_validate(io.read_json(cfg_path)) == cfg
        except ValueError:
            same = False
        if not same:
            raise UserError(f"{cfg_path}: {out} holds a demo with other settings; use a new folder (-o) or delete it")
    else:
        io.write_json(cfg_path, json.loads(cfg.model_dump_json()))
    t_start = time.perf_counter()
    r = _Runner(out, cfg, say)

    # 1. corpus ---------------------------------------------------------------------------
    def do_corpus(d: Path) -> None:
        dialogs = corpus.generate_corpus(corpus.CorpusConfig(
            n_dialogs=cfg.n_dialogs, good_rate=cfg.good_rate, tempting_rate=cfg.tempting_rate, seed=cfg.seed))
        io.write_jsonl(d / "raw.jsonl", dialogs)
        (d / "search_seeds.txt").write_text("\n".join(world.seed_openings(cfg.search_seeds, cfg.seed + 1)) + "\n")
        (d / "eval_seeds.txt").write_text("\n".join(world.seed_openings(cfg.eval_seeds, cfg.seed + 2)) + "\n")

    c_dir = r.stage("corpus", do_corpus)

    # 2. annotate -------------------------------------------------------------------------
    def do_annotate(d: Path) -> None:
        from sage_dialog.stages.annotate import AnnotateConfig
        from sage_dialog.stages.annotate import run as annotate_run

        annotate_run(AnnotateConfig.model_validate({"input": c_dir / "raw.jsonl", "output": d / "annotated.jsonl",
                                                  "annotator": "oracle"}),
                     annotator=oracle_for("annotator"), quiet=True)

    a_dir = r.stage("annotate", do_annotate)

    # 3. chain ----------------------------------------------------------------------------
    def do_chain(d: Path) -> None:
        from sage_dialog.stages.chain import chain_file

        chain_file(a_dir / "annotated.jsonl", d / "sac.jsonl", src_format="dialogs", dst_format="dialogs")

    ch_dir = r.stage("chain", do_chain)

    # 4. mix ------------------------------------------------------------------------------
    def do_mix(d: Path) -> None:
        from sage_dialog.stages.mix import MixConfig
        from sage_dialog.stages.mix import run as mix_run

        # relative to the spec's folder, as data specs are read: the demo folder stays movable
        io.write_json(d / "data_spec.json", {os.path.relpath(ch_dir / "sac.jsonl", d): {"prompt": ""}})
        mix_run(MixConfig.model_validate({"spec": d / "data_spec.json", "output": d / "mix", "seed": cfg.seed}),
                warn=lambda m: None)

    m_dir = r.stage("mix", do_mix)

    # 5. M1 -------------------------------------------------------------------------------
    def do_sft(d: Path) -> None:
        from sage_dialog.sandbox.tiny_model import build_tiny_model
        from sage_dialog.train.data import load_sft_messages
        from sage_dialog.train.sft import train_sft

        texts = [m["content"] for conv in load_sft_messages(m_dir / "mix" / "train.jsonl") for m in conv]
        base = build_tiny_model(d / "base", texts, vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
                                num_layers=cfg.num_layers, seed=cfg.seed, space_style="suffix")
        train_sft(_sft_config(base, m_dir / "mix" / "train.jsonl", _final_model(d), epochs=cfg.sft_epochs,
                              lr=cfg.sft_lr, batch=cfg.batch_size, seed=cfg.seed))
        _drop_checkpoints(_final_model(d))

    m1 = _final_model(r.stage("sft", do_sft))

    # 5b. the user model (roles flipped), when asked for ---------------------------------------
    def do_user(d: Path) -> None:
        from sage_dialog.train.sft import train_sft

        convs = flipped_conversations(io.read_jsonl(ch_dir / "sac.jsonl", Dialog))
        io.write_jsonl(d / "flipped.jsonl", convs)
        train_sft(_sft_config(m1.parent / "base", d / "flipped.jsonl", _final_model(d), epochs=cfg.sft_epochs,
                              lr=cfg.sft_lr, batch=cfg.batch_size, seed=cfg.seed))
        _drop_checkpoints(_final_model(d))

    def make_user(seed: int) -> Any:
        if cfg.user == "oracle":
            return oracle_for("user", seed=seed)
        from sage_dialog.backends.base import SamplingParams
        from sage_dialog.roles.user_simulator import LLMUserSimulator

        return LLMUserSimulator(_backend(user_model), persona_text="", name="tiny-user-model",
                                sampling=SamplingParams(temperature=cfg.eval_temperature, max_tokens=48))

    if cfg.user == "model":
        r.n_stages += 1
        user_model = _final_model(r.stage("user", do_user))

    # 6. search ---------------------------------------------------------------------------
    def do_search(d: Path) -> None:
        from sage_dialog.stages.search.search import SamplingConfig, SearchConfig, run_search

        seeds = (c_dir / "search_seeds.txt").read_text().splitlines()
        scfg = SearchConfig(strategy="best_of_n", turns=cfg.search_turns, candidates=cfg.candidates,
                            sampling=SamplingConfig(temperature=cfg.search_temperature, top_k=0,
                                                    repetition_penalty=1.0, max_tokens=64),
                            max_resamples=0, seed=cfg.seed)
        backend = _backend(m1)
        run_search(backend, make_user(cfg.seed), oracle_for("selector"), seeds, scfg, d / "out",
                   progress=progress)

    s_dir = r.stage("search", do_search)

    # 7. prefs ----------------------------------------------------------------------------
    def do_prefs(d: Path) -> None:
        from sage_dialog.stages.prefs import PrefsConfig, run_prefs

        counts = run_prefs(s_dir / "out" / "trees", d, PrefsConfig.model_validate({"min_margin": cfg.min_margin, "negatives": cfg.negatives}))
        io.write_json(d / "counts.json", counts)

    p_dir = r.stage("prefs", do_prefs)

    # 8. M2 -------------------------------------------------------------------------------
    def do_rft(d: Path) -> None:
        from sage_dialog.train.sft import train_sft

        train_sft(_sft_config(m1, p_dir / "best_paths.jsonl", _final_model(d), epochs=cfg.rft_epochs,
                              lr=cfg.rft_lr, batch=cfg.batch_size, seed=cfg.seed))
        _drop_checkpoints(_final_model(d))

    m2 = _final_model(r.stage("rft", do_rft))

    # 9. DPO ------------------------------------------------------------------------------
    def do_dpo(d: Path) -> None:
        from sage_dialog.train.config import DPORunConfig
        from sage_dialog.train.dpo import train_dpo

        dcfg = DPORunConfig.model_validate({
            "model": {"name_or_path": str(m2)},
            "adapter": {"method": "full"},
            "data": {"train": str(p_dir / "pairs.jsonl"), "max_length": 512},
            "train": {"epochs": cfg.dpo_epochs, "learning_rate": cfg.dpo_lr, "batch_size": cfg.batch_size,
                      "logging_steps": 25, "save_total_limit": 1, "device": "cpu", "seed": cfg.seed},
            "dpo": {"beta": cfg.dpo_beta, "sft_weight": cfg.dpo_sft_weight},
            "output_dir": str(_final_model(d)),
        })
        train_dpo(dcfg)
        _drop_checkpoints(_final_model(d))

    mdpo = _final_model(r.stage("dpo", do_dpo))
    models = {"M1": m1, "M2": m2, "DPO": mdpo}

    # 10. eval ----------------------------------------------------------------------------
    def do_eval(d: Path) -> None:
        from sage_dialog.backends.base import SamplingParams
        from sage_dialog.stages.search.rollout import play_dialogs

        seeds = (c_dir / "eval_seeds.txt").read_text().splitlines()
        sampling = SamplingParams(temperature=cfg.eval_temperature, max_tokens=64)
        for name, path in models.items():
            backend = _backend(path)
            dialogs = asyncio.run(play_dialogs(backend, make_user(cfg.seed + 7), seeds,
                                               turns=cfg.eval_turns, sampling=sampling, seed=cfg.seed + 7))
            for dlg in dialogs:
                s = world.score_turns(dlg.turns)
                dlg.meta.update(model=name, reward=s.reward, fits=s.fits, final_state=s.final_state)
            io.write_jsonl(d / f"{name}.jsonl", dialogs)

    e_dir = r.stage("eval", do_eval)
    played = {name: list(io.read_jsonl(e_dir / f"{name}.jsonl", Dialog)) for name in models}

    # 11. compare -------------------------------------------------------------------------
    def do_compare(d: Path) -> None:
        from sage_dialog.stages.compare.compare import run_compare

        report = run_compare(played, [oracle_for("pairwise")], d / "out", n_boot=cfg.n_boot, seed=cfg.seed,
                             title="sage-dialog demo: models against M1 (oracle judge)")
        rows = {}
        for name in ("M2", "DPO"):
            rows[name] = _win_rate(report, name, "M1")
        io.write_json(d / "win_rates.json", rows)

    cmp_dir = r.stage("compare", do_compare)

    # 12. steerability --------------------------------------------------------------------
    def do_steer(d: Path) -> None:
        from sage_dialog.backends.base import SamplingParams
        from sage_dialog.core.schema import Tags
        from sage_dialog.stages.steerability import ClassifierJudge, measure

        contexts = [[{"role": "user", "content": s}] for s in world.seed_openings(cfg.steer_contexts, cfg.seed + 3)]
        actions = [Tags(motivation=a.motivation, emotion=a.emotion) for a in world.ACTIONS.values()]
        rep = asyncio.run(measure(_backend(m1), contexts, actions, ClassifierJudge(OracleActionClassifier()),
                                  sampling=SamplingParams(temperature=cfg.eval_temperature, max_tokens=64)))
        io.write_json(d / "steerability.json", json.loads(rep.model_dump_json()))

    st_dir = r.stage("steer", do_steer)

    results = _results(cfg, played, io.read_json(cmp_dir / "win_rates.json"),
                       io.read_json(st_dir / "steerability.json"), r.timings, time.perf_counter() - t_start)
    results["annotation"] = annotation_accuracy(io.read_jsonl(a_dir / "annotated.jsonl", Dialog))
    io.write_json(out / "results.json", results)
    table = format_table(results)
    with io.atomic_write(out / "results.md") as fh:
        fh.write(table + "\n")
    return results


def flipped_conversations(dialogs: Iterable[Dialog]) -> list[dict[str, Any]]:
    """TRL ``messages`` rows that teach a model to play the *user*: the roles flipped exactly as
    :class:`~sage_dialog.roles.user_simulator.LLMUserSimulator` shows a dialog (user turns as the
    model's own, assistant replies without tags as the other party's), with no persona prompt."""
    from sage_dialog.roles.user_simulator import flipped_messages

    rows = []
    for d in dialogs:
        turns = list(d.turns)
        while turns and turns[-1].role != "user":
            turns.pop()  # nothing to learn after the last user turn
        if turns:
            rows.append({"messages": flipped_messages(turns, None)})
    return rows


def annotation_accuracy(dialogs: Iterable[Dialog]) -> dict[str, Any]:
    """Share of annotated turns whose tags equal the corpus's gold tags (``meta["gold"]``), per field."""
    n = 0
    right = {"motivation": 0, "emotion": 0, "topic": 0, "all": 0}
    for d in dialogs:
        for turn, gold in zip(d.turns, d.meta.get("gold", []), strict=False):
            tags = turn.state if turn.role == "user" else turn.action
            if tags is None:
                continue
            n += 1
            hits = {"motivation": tags.motivation == gold["motivation"], "emotion": tags.emotion == gold["emotion"],
                    "topic": tags.topics == gold["topics"]}
            for k, v in hits.items():
                right[k] += v
            right["all"] += all(hits.values())
    return {"turns": n, **{k: (v / n if n else 0.0) for k, v in right.items()}}


def _quiet_libraries() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore")
    logging.getLogger("transformers").setLevel(logging.ERROR)


def _drop_checkpoints(model_dir: Path) -> None:
    """Training checkpoints of a finished stage are not needed by the demo (the model is saved)."""
    import shutil

    for ck in model_dir.glob("checkpoint-*"):
        shutil.rmtree(ck, ignore_errors=True)


def _win_rate(report: Any, a: str, b: str) -> dict[str, Any]:
    """Win rate of ``a`` against ``b`` from a comparison report (either orientation)."""
    for p in report.pairs:
        if p.unit != "dialog":
            continue
        if (p.model_a, p.model_b) == (a, b):
            return {"win_rate": p.win_rate, "ci": [p.ci_low, p.ci_high], "wins": p.wins, "ties": p.ties,
                    "losses": p.losses, "verdicts": p.verdicts}
        if (p.model_a, p.model_b) == (b, a):
            return {"win_rate": 1 - p.win_rate, "ci": [1 - p.ci_high, 1 - p.ci_low], "wins": p.losses,
                    "ties": p.ties, "losses": p.wins, "verdicts": p.verdicts}
    raise UserError(f"comparison report has no pair {a} vs {b}")


def _results(cfg: DemoConfig, played: dict[str, list[Dialog]], wins: dict[str, Any], steer: dict[str, Any],
             timings: dict[str, float], wall: float) -> dict[str, Any]:
    rewards = {name: [float(d.meta["reward"]) for d in ds] for name, ds in played.items()}
    base = rewards["M1"]
    models: dict[str, Any] = {}
    for k, (name, rs) in enumerate(rewards.items()):
        mean, lo, hi = bootstrap_mean(rs, cfg.n_boot, cfg.seed + k)
        fits = [f for d in played[name] for f in d.meta["fits"]]
        row: dict[str, Any] = {"reward": mean, "reward_ci": [lo, hi], "n": len(rs),
                               "fitting_share": fits.count(1) / len(fits) if fits else 0.0,
                               "clumsy_share": fits.count(-1) / len(fits) if fits else 0.0}
        if name != "M1":
            diff = [x - y for x, y in zip(rs, base, strict=True)]
            dm, dlo, dhi = bootstrap_mean(diff, cfg.n_boot, cfg.seed + 100 + k)
            row.update(diff_vs_m1=dm, diff_ci=[dlo, dhi], significant=dlo > 0 or dhi < 0, win_vs_m1=wins.get(name))
        models[name] = row
    overall = steer["overall"]
    return {
        "models": models,
        "steering": {"model": "M1", "compliance": overall["rate"], "ci": overall["ci95"], "n": overall["n"],
                     "followed": overall["followed"], "tag_adherence": steer["tag_adherence"],
                     "per_action": {k: v["rate"] for k, v in steer["per_action"].items()}},
        "improved": any(m.get("significant") and m["diff_vs_m1"] > 0 for m in models.values()),
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "wall_s": round(wall, 1),
        "stages_total_s": round(sum(timings.values()), 1),
        "config": json.loads(cfg.model_dump_json()),
    }


def format_table(res: dict[str, Any]) -> str:
    """The demo's result table (Markdown)."""
    lines = [
        "| model | ground-truth reward [95% CI] | vs M1: paired difference [95% CI] | fitting / clumsy replies | oracle-judge win rate vs M1 [95% CI] |",
        "|---|---|---|---|---|",
    ]
    for name, m in res["models"].items():
        rew = f"{m['reward']:+.3f} [{m['reward_ci'][0]:+.3f}, {m['reward_ci'][1]:+.3f}]"
        share = f"{m['fitting_share']:.0%} / {m['clumsy_share']:.0%}"
        if name == "M1":
            lines.append(f"| {name} | {rew} | - | {share} | - |")
            continue
        diff = f"{m['diff_vs_m1']:+.3f} [{m['diff_ci'][0]:+.3f}, {m['diff_ci'][1]:+.3f}]" + (" *" if m["significant"] else "")
        w = m.get("win_vs_m1") or {}
        win = f"{w['win_rate']:.2f} [{w['ci'][0]:.2f}, {w['ci'][1]:.2f}] ({w['wins']}-{w['ties']}-{w['losses']})" if w else "-"
        lines.append(f"| {name} | {rew} | {diff} | {share} | {win} |")
    s = res["steering"]
    lines += [
        "",
        f"M1 steering compliance (action forced by prefill, reply read by the oracle action classifier): "
        f"{s['compliance']:.1%} [{s['ci'][0]:.1%}, {s['ci'][1]:.1%}] over {s['n']} replies",
        *([f"oracle annotator agreement with the corpus's gold tags: {res['annotation']['all']:.1%} of "
            f"{res['annotation']['turns']} turns"] if "annotation" in res else []),
        f"held-out seeds: {res['models']['M1']['n']}; * = the 95% interval of the difference excludes zero; "
        f"win/tie/loss counts over both judge orders",
        "stage timings (s): " + ", ".join(f"{k} {v}" for k, v in res["timings_s"].items())
        + f"; all stages {res.get('stages_total_s', '?')}, this invocation {res['wall_s']}",
    ]
    return "\n".join(lines)


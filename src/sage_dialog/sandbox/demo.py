"""The sandbox world's stages of the SAGE loop: ``sage-dialog demo`` is ``sage-dialog run`` on
``configs/demo-sandbox.yaml`` (a copy ships as :data:`DEMO_CONFIG`).

The loop's own stages (annotate, chain, mix, sft, search, prefs, rounds, dpo) run exactly as for a
real model; the world adds three (see :mod:`sage_dialog.pipeline.world`) and plays every role but
the assistant with its oracles (:mod:`.oracles`):

* ``world``    raw dialogs of the world, good and clumsy assistant behaviour mixed (``raw.jsonl``),
               and the search seeds (``seeds.txt``);
* ``base``     a tokenizer and a tiny Llama built from scratch on the SFT set (:mod:`.tiny_model`),
               which the loop's ``sft`` stage fine-tunes into **M1**;
* ``evaluate`` every model of the loop (M1, M2, DPO) plays dialogs from held-out seeds against the
               oracle user (:func:`sage_dialog.roles.rollout.play_dialogs`), each scored by
               the ground-truth reward; the oracle pairwise judge compares them
               (:func:`sage_dialog.stages.compare.compare.run_compare`); M1's steering compliance
               is measured with each action forced by prefill
               (:func:`sage_dialog.stages.steerability.measure`).

``evaluate`` ends with a table (``results.md`` / ``results.json`` in its folder): ground-truth
reward of each model (mean and 95% bootstrap interval over the held-out seeds), the paired
difference to M1 with its interval, judge win rates against M1 and M1's steering compliance.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sage_dialog.core import io
from sage_dialog.core.errors import UserError
from sage_dialog.core.schema import Dialog
from sage_dialog.sandbox import corpus, rules, world
from sage_dialog.sandbox.oracles import OracleActionClassifier, oracle_for

DEMO_CONFIG = Path(__file__).resolve().parent / "data" / "demo-sandbox.yaml"


class CorpusSettings(BaseModel):
    """``world.corpus``: the raw dialogs and the search seeds."""

    model_config = ConfigDict(extra="forbid")
    n_dialogs: int = Field(600, ge=1)
    good_rate: float = Field(0.4, ge=0, le=1)
    tempting_rate: float = Field(0.35, ge=0, le=1)
    search_seeds: int = Field(96, ge=1, description="seed openings written for the search")


class BaseSettings(BaseModel):
    """``world.base``: the tiny Llama built from scratch."""

    model_config = ConfigDict(extra="forbid")
    hidden_size: int = Field(128, ge=8)
    num_layers: int = Field(2, ge=1)
    vocab_size: int = Field(800, ge=64)


class EvalSettings(BaseModel):
    """``world.eval``: held-out dialogs, judge comparison and steering check."""

    model_config = ConfigDict(extra="forbid")
    seeds: int = Field(64, ge=1, description="held-out seed openings each model plays from")
    turns: int = Field(4, ge=1)
    temperature: float = Field(0.7, ge=0)
    max_tokens: int = Field(64, ge=1)
    steer_contexts: int = Field(16, ge=1)
    n_boot: int = Field(2000, ge=100)
    rules: Literal["standard", "long_horizon"] = Field(
        "standard", description="the user dynamics the models are measured in (sandbox/rules.py): standard, "
        "or long_horizon (delayed consequences: per-turn greedy choice is wrong by design)")


def _settings(model: type[BaseModel], data: dict[str, Any], section: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise UserError(io.format_validation_error(f"config section world.{section}", None, e)) from None


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
# the world's stages


class SandboxWorld:
    """The sandbox as a world of the SAGE loop (registered by :mod:`.plugin`)."""

    def check(self, section: Any) -> None:
        _settings(CorpusSettings, section.corpus, "corpus")
        _settings(BaseSettings, section.base, "base")
        _settings(EvalSettings, section.eval, "eval")

    def prepare(self, settings: dict[str, Any], seed: int, out_dir: Path) -> dict[str, Any]:
        cfg = _settings(CorpusSettings, settings, "corpus")
        dialogs = corpus.generate_corpus(corpus.CorpusConfig(
            n_dialogs=cfg.n_dialogs, good_rate=cfg.good_rate, tempting_rate=cfg.tempting_rate, seed=seed))
        io.write_jsonl(out_dir / "raw.jsonl", dialogs)
        (out_dir / "seeds.txt").write_text("\n".join(world.seed_openings(cfg.search_seeds, seed + 1)) + "\n")
        return {"dialogs": len(dialogs), "seeds": cfg.search_seeds}

    def build_base(self, settings: dict[str, Any], seed: int, train_file: Path, out_dir: Path) -> dict[str, Any]:
        from sage_dialog.sandbox.tiny_model import build_tiny_model
        from sage_dialog.train.data import load_sft_messages

        cfg = _settings(BaseSettings, settings, "base")
        _quiet_libraries()
        texts = [m["content"] for conv in load_sft_messages(train_file) for m in conv]
        build_tiny_model(out_dir / "model", texts, vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
                         num_layers=cfg.num_layers, seed=seed, space_style="suffix")
        return {"hidden_size": cfg.hidden_size, "num_layers": cfg.num_layers, "vocab_size": cfg.vocab_size}

    def evaluate(self, settings: dict[str, Any], inputs: Any, out_dir: Path) -> dict[str, Any]:
        cfg = _settings(EvalSettings, settings, "eval")
        _quiet_libraries()
        res = evaluate(cfg, inputs, out_dir)
        m = res["models"]
        return {name: round(row["reward"], 3) for name, row in m.items()} | {
            "steering": round(res["steering"]["compliance"], 3)}


def _backend(path: Path, provider: str, options: dict[str, Any]) -> Any:
    from sage_dialog.backends.base import BackendConfig, load_backend

    return load_backend(BackendConfig(spec=f"{provider}:{path}", options=options))


def evaluate(cfg: EvalSettings, inputs: Any, out: Path) -> dict[str, Any]:
    """Play, score, compare and steer (see the module docstring); writes ``results.json``/``.md``."""
    import time

    from sage_dialog.backends.base import SamplingParams
    from sage_dialog.core.schema import Tags
    from sage_dialog.roles.rollout import play_dialogs
    from sage_dialog.stages.compare.compare import run_compare
    from sage_dialog.stages.steerability import ClassifierJudge, measure

    t0 = time.perf_counter()
    seed = inputs.seed
    seeds = world.seed_openings(cfg.seeds, seed + 2)
    sampling = SamplingParams(temperature=cfg.temperature, max_tokens=cfg.max_tokens)
    played: dict[str, list[Dialog]] = {}
    for name, path in inputs.models.items():
        backend = _backend(path, inputs.provider, inputs.backend_options)
        dialogs = asyncio.run(play_dialogs(backend, oracle_for("user", seed=seed + 7, rules=cfg.rules), seeds,
                                           turns=cfg.turns, sampling=sampling, seed=seed + 7))
        for dlg in dialogs:
            s = rules.replay(cfg.rules, dlg.turns)
            dlg.meta.update(model=name, reward=rules.dialog_reward(cfg.rules, dlg.turns), fits=s.fits,
                            final_state=s.final_state)
        io.write_jsonl(out / "played" / f"{name}.jsonl", dialogs)
        played[name] = dialogs
    names = list(inputs.models)
    first = names[0]
    report = run_compare(played, [oracle_for("pairwise", rules=cfg.rules)], out / "compare", n_boot=cfg.n_boot, seed=seed,
                         title=f"sage-dialog demo: models against {first} (oracle judge)")
    wins = {name: _win_rate(report, name, first) for name in names[1:]}
    contexts = [[{"role": "user", "content": s}] for s in world.seed_openings(cfg.steer_contexts, seed + 3)]
    actions = [Tags(motivation=a.motivation, emotion=a.emotion) for a in world.ACTIONS.values()]
    rep = asyncio.run(measure(_backend(inputs.models[first], inputs.provider, inputs.backend_options), contexts,
                              actions, ClassifierJudge(OracleActionClassifier()), sampling=sampling))
    steer = json.loads(rep.model_dump_json())
    io.write_json(out / "steerability.json", steer)
    timings = {**inputs.timings, "evaluate": time.perf_counter() - t0}
    results = _results(cfg, seed, played, wins, steer, timings)
    results["annotation"] = annotation_accuracy(d for f in inputs.annotated for d in io.read_jsonl(f, Dialog))
    results["judge_trust"] = _judge_trust(report)
    io.write_json(out / "results.json", results)
    with io.atomic_write(out / "results.md") as fh:
        fh.write(format_table(results) + "\n")
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


def _judge_trust(report: Any) -> dict[str, Any]:
    """The oracle judge's trust figures from the comparison report (canaries, repeat, both orders)."""
    j = report.judges[0]
    t = next((x for x in report.trust if x.judge == j.judge), None)
    out: dict[str, Any] = {"judge": j.judge, "consistent": j.consistent, "both_orders": j.both_orders,
                           "flipped": j.flipped}
    if t is not None:
        out.update(canaries=t.canaries, canary_followed=t.followed, canary_flips=t.flipped,
                   asked_again=t.stability_n, changed=t.stability_changed)
    return out


def _results(cfg: EvalSettings, seed: int, played: dict[str, list[Dialog]], wins: dict[str, Any],
             steer: dict[str, Any], timings: dict[str, float]) -> dict[str, Any]:
    rewards = {name: [float(d.meta["reward"]) for d in ds] for name, ds in played.items()}
    base = rewards["M1"]
    models: dict[str, Any] = {}
    for k, (name, rs) in enumerate(rewards.items()):
        mean, lo, hi = bootstrap_mean(rs, cfg.n_boot, seed + k)
        fits = [f for d in played[name] for f in d.meta["fits"]]
        row: dict[str, Any] = {"reward": mean, "reward_ci": [lo, hi], "n": len(rs),
                               "fitting_share": fits.count(1) / len(fits) if fits else 0.0,
                               "clumsy_share": fits.count(-1) / len(fits) if fits else 0.0}
        if name != "M1":
            diff = [x - y for x, y in zip(rs, base, strict=True)]
            dm, dlo, dhi = bootstrap_mean(diff, cfg.n_boot, seed + 100 + k)
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
        "stages_total_s": round(sum(timings.values()), 1),
        "eval_config": json.loads(cfg.model_dump_json()),
    }


def _trust_line(t: dict[str, Any]) -> str:
    line = (f"judge trust ({t['judge']}): kept its verdict with the dialogs swapped in {t['consistent']} of "
            f"{t['both_orders']} pairs")
    if "canaries" in t:
        line += (f"; injection canary flips {t['canary_flips']} of {t['canaries']} (picked the injected reply "
                 f"{t['canary_followed']}); changed when asked again {t['changed']} of {t['asked_again']}")
    return line


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
        *([_trust_line(res["judge_trust"])] if "judge_trust" in res else []),
        f"held-out seeds: {res['models']['M1']['n']}; * = the 95% interval of the difference excludes zero; "
        f"win/tie/loss counts over both judge orders",
        "stage timings (s): " + ", ".join(f"{k} {v}" for k, v in res["timings_s"].items())
        + f"; all stages {res.get('stages_total_s', '?')}",
    ]
    return "\n".join(lines)


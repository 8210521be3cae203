"""The SAGE loop as stages of one run directory (the ``sage-dialog run`` command).

``annotate -> chain -> mix -> sft`` gives M1; then ``rounds`` times ``search-rK -> prefs-rK -> sft-rK``
(rejection-sampling fine-tuning on the best paths) gives M2, M3, ...; then ``search -> prefs -> dpo``
(or, with ``dpo_pairs: last_round``, DPO on the last round's pairs without a new search) and
``compare`` of every model. Each stage calls the same Python API as its own command and is
skipped when its config and inputs are unchanged (see :mod:`sage_dialog.pipeline.runner`).

The config is :class:`~sage_dialog.pipeline.loop_config.LoopConfig`, whose sections are the stages'
typed settings. Each stage function here is an adapter: it fills the stage's ``Inputs`` from the
run folder, calls ``run(settings, inputs=..., out=...)`` and returns the ``Result``'s summary
(counts, quality, usage figures), which the runner writes into the stage's manifest for the gates.

A ``world`` section (see :mod:`sage_dialog.pipeline.world`) adds a world's stages: ``world`` first
(raw dialogs and seeds), ``base`` (the base model, when no ``base_model`` is given) and ``evaluate``
last (ground-truth measurements of every model). ``sage-dialog demo`` is this loop on the sandbox
world's config.

Every model a stage produces is a plain model folder (``<stage>/model``: a LoRA adapter is merged),
so any backend can serve it. With ``provider: hf`` the loop's own stages serve a LoRA-trained model
from its adapter (``<stage>/train``) instead: every model on the same base then shares one copy of
the base in memory (:mod:`sage_dialog.backends.shared_base`).
"""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from sage_dialog.backends.base import BackendConfig
from sage_dialog.core.errors import UserError
from sage_dialog.core.io import format_validation_error, write_json
from sage_dialog.pipeline.loop_config import DPOSection, LoopConfig, SFTSection
from sage_dialog.pipeline.runner import Stage, StageContext, StageOutcome, stage_gates
from sage_dialog.pipeline.world import EvalInputs, get_world
from sage_dialog.roles.factory import BackendPool
from sage_dialog.stages.base import StageResult
from sage_dialog.stages.search.stage import SearchRunConfig


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _validated(model: type[BaseModel], data: dict[str, Any], section: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise UserError(format_validation_error(f"config section {section}", None, e)) from None


# ---------------------------------------------------------------------------------------------
# stage functions: each fills its stage's Inputs from the run folder and returns its Result's summary


def _summary(res: StageResult) -> dict[str, Any]:
    """What the runner records in the stage's manifest (and the gates read): the result's counts and quality."""
    return {k: v for k, v in res.summary().items() if k != "outputs"}


def _model_dir(stage_dir: Path) -> Path:
    return stage_dir / "model"


def _served(cfg: LoopConfig, stage_dir: Path) -> Path:
    """The folder the loop's backends load a stage's model from: its LoRA adapter on ``hf`` (one shared
    base in memory), else the merged model."""
    from sage_dialog.backends.shared_base import is_adapter_dir

    adapter = stage_dir / "train"
    return adapter if cfg.provider == "hf" and is_adapter_dir(adapter) else _model_dir(stage_dir)


def _annotate(cfg: LoopConfig):  # type: ignore[no-untyped-def]
    from sage_dialog.stages import annotate

    def fn(ctx: StageContext) -> dict[str, Any]:
        counts: dict[str, Any] = {}
        raws = [*cfg.raw, *([ctx.dir_of("import") / "dialogs.jsonl"] if cfg.import_ else []),
                *([ctx.dir_of("world") / "raw.jsonl"] if cfg.world else [])]
        settings, section = cfg.annotate_settings(), cfg.annotate
        for i, raw in enumerate(raws):
            res = annotate.run(settings, inputs=annotate.Inputs(dialogs=raw, few_shot=section.few_shot,
                                                                prompt=section.prompt),
                               out=ctx.out_dir / f"annotated-{i}.jsonl")
            counts = {k: counts.get(k, 0) + int(res.counts.get(k, 0)) for k in annotate.COUNT_KEYS}
            speed = res.usage.get("ledger", {}).get("tokens_per_s")
            if speed is not None:
                counts["tokens_per_s"] = speed  # the last file's; files are annotated one after another
        return {"files": len(raws), **counts}

    return fn


def _import(cfg: LoopConfig):  # type: ignore[no-untyped-def]
    def fn(ctx: StageContext) -> dict[str, Any]:
        from sage_dialog.formats.corpora import import_corpus

        imp = cfg.import_
        assert imp is not None
        got = import_corpus(imp.corpus, imp.file, ctx.out_dir / "dialogs.jsonl", seeds_out=ctx.out_dir / "seeds.txt",
                            limit=imp.limit, min_turns=imp.min_turns, max_turns=imp.max_turns)
        return {"dialogs": got.dialogs, "seeds": got.seeds,
                **({"skipped_short": sum(got.skipped.values())} if got.skipped else {})}

    return fn


def _seeds(cfg: LoopConfig, ctx: StageContext) -> Path:
    """The search and compare seeds: the configured file, else the world's or the import stage's openings."""
    if cfg.search.seeds is not None:
        return cfg.search.seeds
    return ctx.dir_of("world" if cfg.world else "import") / "seeds.txt"


def _chain(ctx: StageContext) -> dict[str, Any]:
    from sage_dialog.stages import chain

    files = {f.name.replace("annotated", "chained"): f for f in sorted(ctx.dir_of("annotate").glob("annotated-*.jsonl"))
             if not f.name.endswith((".rejects.jsonl", ".summary.json"))}
    return _summary(chain.run(chain.Settings.model_validate({}), inputs=chain.Inputs(files=files), out=ctx.out_dir))


def _mix(cfg: LoopConfig):  # type: ignore[no-untyped-def]
    from sage_dialog.stages import mix

    def fn(ctx: StageContext) -> dict[str, Any]:
        files = sorted(ctx.dir_of("chain").glob("chained-*.jsonl"))
        spec = {str(f.resolve()): {"prompt": cfg.prompt} for f in files}
        # the spec is an input of mix: written beside its output folder, kept inside it once mixed
        spec_file = ctx.out_dir.with_name(f"{ctx.out_dir.name}.data_spec.json")
        write_json(spec_file, spec)
        settings = cfg.mix if "seed" in cfg.mix.model_fields_set else cfg.mix.model_copy(update={"seed": cfg.seed})
        try:
            res = mix.run(settings, inputs=mix.Inputs(spec=spec_file), out=ctx.out_dir)
            spec_file.replace(ctx.out_dir / "data_spec.json")
        finally:
            spec_file.unlink(missing_ok=True)
        return _summary(res)

    return fn


def _launch(launcher: list[str], kind: str, rcfg: BaseModel, out_dir: Path) -> Path:
    """Run ``sage-dialog train KIND`` under ``launcher`` (accelerate, torchrun, ...) in a new process."""
    import subprocess
    import sys

    import yaml

    cfg_file = out_dir / f"{kind}.yaml"
    cfg_file.write_text(yaml.safe_dump(rcfg.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
    cmd = [*launcher, "-m", "sage_dialog", "train", kind, str(cfg_file)]
    if launcher[0] == "python":
        cmd[0] = sys.executable
    res = subprocess.run(cmd, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {res.returncode}")
    return Path(rcfg.output_dir)  # type: ignore[attr-defined]


def _train(cfg: LoopConfig, kind: Literal["sft", "dpo"], section: SFTSection | DPOSection, base_of: Any,
           data_of: Any, label: str):  # type: ignore[no-untyped-def]
    """An SFT or DPO stage: train from ``base_of(ctx)`` on ``data_of(ctx)``, merge into ``model/``."""

    def fn(ctx: StageContext) -> dict[str, Any]:
        from sage_dialog.train.config import DPORunConfig, SFTRunConfig
        from sage_dialog.train.export import export_model, is_adapter

        data: dict[str, Any] = {"train": str(data_of(ctx))}
        valid = Path(data["train"]).with_name("valid.jsonl")
        if kind == "sft" and valid.exists() and "eval_fraction" not in section.data.model_fields_set:
            data["eval"] = str(valid)
        # the section as written (what it leaves out keeps the run config's defaults) and what the loop sets
        raw = _merge(section.model_dump(mode="json", exclude_unset=True),
                     {"model": {"name_or_path": str(base_of(ctx))}, "data": data,
                      "output_dir": str(ctx.out_dir / "train")})
        model_cls = SFTRunConfig if kind == "sft" else DPORunConfig
        rcfg = _validated(model_cls, raw, label)
        if cfg.launcher:
            out = _launch(cfg.launcher, kind, rcfg, ctx.out_dir)
        elif kind == "sft":
            from sage_dialog.train.sft import train_sft

            out = train_sft(rcfg)
        else:
            from sage_dialog.train.dpo import train_dpo

            out = train_dpo(rcfg)
        from sage_dialog.core.rss import trim_heap

        trim_heap()  # the training's activations go back to the system before the merge loads a model
        if is_adapter(out):
            export_model(out, _model_dir(ctx.out_dir))
        else:
            out.rename(_model_dir(ctx.out_dir))
        from sage_dialog.core.io import read_json
        from sage_dialog.train.summary import SUMMARY_FILE

        trained = out if out.exists() else _model_dir(ctx.out_dir)
        s = read_json(trained / SUMMARY_FILE)
        keys = ("train_examples", "steps", "first_train_loss", "final_train_loss", "final_eval_loss", "tokens_per_s")
        return {k: s[k] for k in keys if s.get(k) is not None}

    return fn


def _search(cfg: LoopConfig, model_stage: str):  # type: ignore[no-untyped-def]
    def fn(ctx: StageContext) -> dict[str, Any]:
        from sage_dialog.stages.search import stage as search

        scfg = search_config(cfg, _served(cfg, ctx.dir_of(model_stage)), ctx.out_dir, _seeds(cfg, ctx))
        res = search.run(scfg)
        return {"seeds": res.seeds, **res.counts}

    return fn


def search_config(cfg: LoopConfig, model: Path, out: Path, seeds: Path) -> SearchRunConfig:
    """The search of one loop stage: the config's search section with the loop's model, folder,
    seeds, seed, cache and backend options filled in (``sage-dialog search`` builds the same config)."""
    s = cfg.search
    strategy = s.config if "seed" in s.config.model_fields_set else s.config.model_copy(update={"seed": cfg.seed})
    return s.model_copy(update={
        "assistant": f"{cfg.provider}:{model}", "out": out, "seeds": seeds, "config": strategy,
        "cache": s.cache or cfg.cache_path(), "backend_options": {**cfg.backend_options, **s.backend_options},
        "engine": s.engine if "engine" in s.model_fields_set else cfg.engine})


def _prefs(cfg: LoopConfig, search_stage: str):  # type: ignore[no-untyped-def]
    def fn(ctx: StageContext) -> dict[str, Any]:
        from sage_dialog.stages import prefs

        return _summary(prefs.run(cfg.prefs, inputs=prefs.Inputs(source=ctx.dir_of(search_stage) / "trees"),
                                  out=ctx.out_dir))

    return fn


def _compare(cfg: LoopConfig, models: dict[str, str]):  # type: ignore[no-untyped-def]
    def fn(ctx: StageContext) -> dict[str, Any]:
        from sage_dialog.stages.compare import compare

        specs = {name: BackendConfig(spec=f"{cfg.provider}:{_served(cfg, ctx.dir_of(stage))}", options=cfg.backend_options)
                 for name, stage in models.items()}
        if cfg.compare_base:
            base = cfg.base_model or _model_dir(ctx.dir_of("base"))
            specs = {"base": BackendConfig(spec=f"{cfg.provider}:{base}", options=cfg.backend_options), **specs}
        if cfg.benchmarks is not None:  # the benchmark table goes into the comparison's report
            import shutil

            shutil.copyfile(ctx.dir_of("benchmarks") / "eval_results.json", ctx.out_dir / "eval_results.json")
        assert cfg.compare is not None
        data = {"seeds": str(_seeds(cfg, ctx)), "max_seeds": cfg.search.max_seeds, "seed": cfg.seed,
                "cache": cfg.cache_path(), **cfg.compare.model_dump(mode="json", exclude_unset=True),
                # the loop's options reach the user and judges on the loop's provider, as in search
                "backend_options": {**(cfg.backend_options if cfg.provider == "hf" else {}),
                                    **cfg.compare.backend_options},
                "out": str(ctx.out_dir), "models": specs}
        ccfg = _validated(compare.CompareConfig, data, "compare")
        res = compare.run(compare.Settings.of(ccfg), inputs=ccfg.inputs(), out=ctx.out_dir, progress=False)
        speed = res.usage.get("tokens_per_s")
        return {**_summary(res), **({"tokens_per_s": speed} if speed is not None else {})}

    return fn


def _benchmarks(cfg: LoopConfig, models: dict[str, str]):  # type: ignore[no-untyped-def]
    def fn(ctx: StageContext) -> dict[str, Any]:
        from sage_dialog.stages import benchmarks

        b = cfg.benchmarks
        assert b is not None
        specs: dict[str, str | BackendConfig] = {}
        if b.base:
            base = cfg.base_model or _model_dir(ctx.dir_of("base"))
            specs["base"] = BackendConfig(spec=f"{cfg.provider}:{base}", options=cfg.backend_options)
        for name, stage in models.items():
            specs[name] = BackendConfig(spec=f"{cfg.provider}:{_model_dir(ctx.dir_of(stage))}",
                                        options=cfg.backend_options)
        settings = b if "seed" in b.model_fields_set else b.model_copy(update={"seed": cfg.seed})
        res = benchmarks.run(settings, inputs=benchmarks.Inputs(models=specs), out=ctx.out_dir)
        return _summary(res)

    return fn


def _steerability(cfg: LoopConfig, model_stage: str):  # type: ignore[no-untyped-def]
    def fn(ctx: StageContext) -> dict[str, Any]:
        from sage_dialog.stages import annotate, steerability
        from sage_dialog.stages.search.seeds import read_seed_file

        st = cfg.steerability
        assert st is not None
        contexts = [[{"role": "user", "content": s}] for s in read_seed_file(_seeds(cfg, ctx))]
        pool = BackendPool(cfg.cache_path(), cfg.backend_options, options_provider=cfg.provider)
        files = annotate.Inputs(dialogs=Path("."), few_shot=cfg.annotate.few_shot, prompt=cfg.annotate.prompt)
        annotator, ann_pool = annotate.build_annotator(cfg.annotate_settings(), files)
        try:
            inputs = steerability.Inputs(model=pool.get(f"{cfg.provider}:{_served(cfg, ctx.dir_of(model_stage))}"),
                                         contexts=contexts, judge=steerability.AnnotatorJudge(annotator))
            res = steerability.run(st, inputs=inputs, out=ctx.out_dir / "report.json")
        finally:
            asyncio.run(pool.aclose())
            asyncio.run(ann_pool.aclose())
        (ctx.out_dir / "report.txt").write_text(steerability.format_report(res.report) + "\n", encoding="utf-8")
        return _summary(res)

    return fn


def _rl(cfg: LoopConfig, model_stage: str):  # type: ignore[no-untyped-def]
    """The rl stage: the stage module's run() with the loop's model, seeds and cache; merged into model/."""

    def fn(ctx: StageContext) -> dict[str, Any]:
        from sage_dialog.stages import rl
        from sage_dialog.train.config import ModelSection
        from sage_dialog.train.export import export_model, is_adapter

        assert cfg.rl is not None
        inputs = rl.Inputs(model=ModelSection(name_or_path=str(_model_dir(ctx.dir_of(model_stage)))),
                           seeds=_seeds(cfg, ctx), cache=cfg.cache_path())
        res = rl.run(cfg.rl, inputs=inputs, out=ctx.out_dir / "train")
        trained = ctx.out_dir / "train"
        if is_adapter(trained):
            export_model(trained, _model_dir(ctx.out_dir))
        else:
            trained.rename(_model_dir(ctx.out_dir))
        return _summary(res)

    return fn


def _world_prepare(cfg: LoopConfig):  # type: ignore[no-untyped-def]
    assert cfg.world is not None
    world, section = get_world(cfg.world.name), cfg.world

    def fn(ctx: StageContext) -> dict[str, Any]:
        return world.prepare(section.corpus, cfg.seed, ctx.out_dir)

    return fn


def _world_base(cfg: LoopConfig):  # type: ignore[no-untyped-def]
    assert cfg.world is not None
    world, section = get_world(cfg.world.name), cfg.world

    def fn(ctx: StageContext) -> dict[str, Any]:
        return world.build_base(section.base, cfg.seed, ctx.dir_of("mix") / "train.jsonl", ctx.out_dir)

    return fn


def _world_evaluate(cfg: LoopConfig, models: dict[str, str], before: list[str]):  # type: ignore[no-untyped-def]
    assert cfg.world is not None
    world, section = get_world(cfg.world.name), cfg.world

    def fn(ctx: StageContext) -> dict[str, Any]:
        from sage_dialog.core.io import read_json

        timings = {}
        for name in before:  # the time each stage took when it ran, for the results table
            m = ctx.run_dir / name / "manifest.json"
            if m.exists():
                timings[name] = float(read_json(m).get("summary", {}).get("seconds", 0.0))
        annotated = sorted(f for f in ctx.dir_of("annotate").glob("annotated-*.jsonl")
                           if not f.name.endswith(".rejects.jsonl"))
        inputs = EvalInputs(models={n: _model_dir(ctx.dir_of(st)) for n, st in models.items()}, annotated=annotated,
                            provider=cfg.provider, backend_options=cfg.backend_options, seed=cfg.seed, timings=timings)
        return world.evaluate(section.eval, inputs, ctx.out_dir)

    return fn


def check_sections(cfg: LoopConfig) -> None:
    """Check what the typed sections cannot: the world's own section, before any stage starts."""
    if cfg.world is not None:
        get_world(cfg.world.name).check(cfg.world)


def build_stages(cfg: LoopConfig) -> list[Stage]:
    """The loop's stages in order, each with the config slice its fingerprint covers."""
    check_sections(cfg)
    if not cfg.raw and cfg.import_ is None and cfg.world is None:
        raise UserError("config: give raw dialog files, an import section, a world, or several")
    if cfg.search.seeds is None and cfg.import_ is None and cfg.world is None:
        raise UserError("config: search.seeds: missing (it defaults to the world's or the import stage's seeds "
                        "only with a world or an import section)")
    if cfg.base_model is None and cfg.world is None:
        raise UserError("config: base_model: missing (only a world builds one)")
    dump = cfg.model_dump(mode="json")
    common = {"seed": cfg.seed, "provider": cfg.provider, "backend_options": cfg.backend_options,
              "launcher": cfg.launcher}
    stages: list[Stage] = []
    sources: list[str] = []  # stages whose files the annotate stage reads
    if cfg.world is not None:
        stages.append(Stage("world", _world_prepare(cfg), {"seed": cfg.seed, "world": cfg.world.name,
                                                           "corpus": dump["world"]["corpus"]}))
        sources.append("world")
    if cfg.import_ is not None:
        stages.append(Stage("import", _import(cfg), {"import": dump["import_"]},
                            inputs=[cfg.import_.file] if cfg.import_.file else []))
        sources.append("import")
    seed_inputs = [cfg.search.seeds] if cfg.search.seeds is not None else []
    seed_deps = [] if cfg.search.seeds is not None else ["world" if cfg.world else "import"]
    stages += [
        Stage("annotate", _annotate(cfg), {**common, "annotate": dump["annotate"]}, inputs=list(cfg.raw), deps=sources),
        Stage("chain", _chain, {}, deps=["annotate"]),
        Stage("mix", _mix(cfg), {**common, "mix": dump["mix"], "prompt": cfg.prompt}, deps=["chain"]),
    ]
    base_of: Any
    if cfg.base_model is None:
        assert cfg.world is not None
        stages.append(Stage("base", _world_base(cfg), {"seed": cfg.seed, "world": cfg.world.name,
                                                       "base": dump["world"]["base"]}, deps=["mix"]))
        base_of = lambda c: _model_dir(c.dir_of("base"))  # noqa: E731
        base_deps, base_cfg = ["mix", "base"], "world"
    else:
        base_model = cfg.base_model
        base_of = lambda _c: base_model  # noqa: E731
        base_deps, base_cfg = ["mix"], base_model
    stages.append(Stage("sft", _train(cfg, "sft", cfg.sft, base_of, lambda c: c.dir_of("mix") / "train.jsonl", "sft"),
                        {**common, "sft": dump["sft"], "base": base_cfg}, deps=base_deps))
    models = {"M1": "sft"}
    last = "sft"
    search_cfg = {**common, "search": dump["search"], "seeds_content": str(cfg.search.seeds), "cache": cfg.cache}
    rft = cfg.rft if cfg.rft is not None else cfg.sft
    prefs_of_dpo = "prefs"
    for r in range(1, cfg.rounds + 1):
        s, p, t = f"search-r{r}", f"prefs-r{r}", f"sft-r{r}"
        stages += [
            Stage(s, _search(cfg, last), search_cfg, deps=[*seed_deps, last], inputs=seed_inputs),
            Stage(p, _prefs(cfg, s), {"prefs": dump["prefs"]}, deps=[s]),
            Stage(t, _train(cfg, "sft", rft, lambda c, last=last: _model_dir(c.dir_of(last)),
                            lambda c, p=p: c.dir_of(p) / "best_paths.trl.jsonl", "rft"),
                  {**common, "rft": rft.model_dump(mode="json")}, deps=[last, p]),
        ]
        last = t
        models[f"M{r + 1}"] = t
        prefs_of_dpo = p
    if cfg.dpo_pairs == "search":
        stages += [
            Stage("search", _search(cfg, last), search_cfg, deps=[*seed_deps, last], inputs=seed_inputs),
            Stage("prefs", _prefs(cfg, "search"), {"prefs": dump["prefs"]}, deps=["search"]),
        ]
        prefs_of_dpo = "prefs"
    stages.append(Stage("dpo", _train(cfg, "dpo", cfg.dpo, lambda c, last=last: _model_dir(c.dir_of(last)),
                                      lambda c, p=prefs_of_dpo: c.dir_of(p) / "pairs.trl.jsonl", "dpo"),
                        {**common, "dpo": dump["dpo"], "dpo_pairs": cfg.dpo_pairs}, deps=[last, prefs_of_dpo]))
    models["DPO"] = "dpo"
    if cfg.rl is not None:
        stages.append(Stage("rl", _rl(cfg, last), {**common, "rl": dump["rl"], "cache": cfg.cache},
                            deps=[*seed_deps, last], inputs=seed_inputs))
        models["RL"] = "rl"
    if cfg.benchmarks is not None:  # before compare, whose report shows the table next to the win rates
        bench_base = ["base"] if cfg.benchmarks.base and cfg.base_model is None else []
        stages.append(Stage("benchmarks", _benchmarks(cfg, models),
                            {**common, "benchmarks": dump["benchmarks"], "models": models,
                             "base": cfg.benchmarks.base and (cfg.base_model or "world")},
                            deps=[*bench_base, *dict.fromkeys(models.values())]))
    if cfg.compare is not None:
        base_dep = ["base"] if cfg.compare_base and cfg.base_model is None else []
        bench_dep = ["benchmarks"] if cfg.benchmarks is not None else []
        stages.append(Stage("compare", _compare(cfg, models),
                            {**common, "compare": dump["compare"], "search": dump["search"],
                             "base": cfg.compare_base and (cfg.base_model or "world")},
                            deps=[*seed_deps, *base_dep, *dict.fromkeys(models.values()), *bench_dep],
                            inputs=seed_inputs))
    if cfg.steerability is not None:
        stages.append(Stage("steerability", _steerability(cfg, "sft"), {**common, "steer": dump["steerability"],
                                                                        "annotate": dump["annotate"]},
                            deps=[*seed_deps, "sft"]))
    if cfg.world is not None:
        stages.append(Stage("evaluate", _world_evaluate(cfg, models, [st.name for st in stages]),
                            {**common, "world": cfg.world.name, "eval": dump["world"]["eval"], "models": models},
                            deps=list(dict.fromkeys(["annotate", *models.values()]))))
    for st in stages:  # gates are checked by the runner, outside the fingerprints
        kind = st.name.split("-")[0]
        st.gates = stage_gates("train" if kind in ("sft", "dpo") else kind, cfg.gates)
    return stages


def run_loop(cfg: LoopConfig, *, from_stage: str | None = None, until: str | None = None,
             log: Any = print, gates: bool = True) -> list[StageOutcome]:
    """Build the loop's stages and run them into ``cfg.run_dir`` (the ``run`` and ``demo`` commands)."""
    from sage_dialog.pipeline.runner import run_stages

    stages = build_stages(cfg)
    if cfg.threads is not None:
        import torch

        torch.set_num_threads(cfg.threads)
    return run_stages(stages, cfg.run_dir, from_stage=from_stage, until=until, seed=cfg.seed, log=log, gates=gates)


def results_table(cfg: LoopConfig) -> str | None:
    """The world's results table of a finished run (``evaluate/results.md``), if the run has one."""
    path = cfg.run_dir / "evaluate" / "results.md"
    return path.read_text(encoding="utf-8").rstrip("\n") if cfg.world is not None and path.exists() else None

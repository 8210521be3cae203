"""Run the SAGE loop from one YAML config, skipping stages whose inputs and config are unchanged.

Stages, each in its own folder of the run directory with a manifest.json:
annotate, chain, mix, sft (M1); per round: search-rK, prefs-rK, sft-rK (M2, M3, ...);
then search, prefs, dpo, compare. A world section adds the world's stages (world, base, evaluate)
and the run ends with its results table. Change one config value and exactly the stages downstream
of it run again. A stage that fails leaves finished stages in place; run the same command to go on.
Between stages, gates (the config's `gates:` section) stop the run with exit code 2 when a stage's
counts say its output is empty or noise (most dialogs rejected, verdicts unparsed, no training
examples); --no-gates reports them and goes on.

Example:
  sage-dialog run configs/demo-sandbox.yaml          # = sage-dialog demo -o demo-out
  sage-dialog run configs/sage-original.yaml --from search --until dpo
  sage-dialog run --until sft configs/demo-sandbox.yaml --set rounds=2     # options in any order
  sage-dialog run configs/demo-sandbox.yaml rounds=2 search.config.candidates=8 --list
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from sage_dialog.commands.config_flags import add_config_option

    parser.add_argument("config_arg", nargs="?", type=Path, metavar="CONFIG",
                        help="YAML config of the loop (see configs/); the same as --config CONFIG")
    parser.add_argument("key_values", nargs="*", metavar="KEY=VALUE",
                        help="dotted overrides of config values, as --set (e.g. rounds=2 sft.train.epochs=1)")
    parser.add_argument("--from", dest="from_stage", metavar="STAGE", help="run this stage and all after it again")
    parser.add_argument("--until", metavar="STAGE", help="stop after this stage")
    parser.add_argument("--list", action="store_true", help="list the stages and exit")
    parser.add_argument("--no-gates", action="store_true",
                        help="report failed gates but go on (recorded in each stage's manifest)")
    add_config_option(parser, "the loop (LoopConfig)")


def run(args: argparse.Namespace) -> int:
    from sage_dialog.commands.config_flags import config_path, overrides_of
    from sage_dialog.core.config import load_config
    from sage_dialog.core.errors import UserError
    from sage_dialog.core.io import check_paths
    from sage_dialog.pipeline.loop_config import LoopConfig
    from sage_dialog.pipeline.sage_loop import build_stages

    config = config_path(args)
    if config is None:
        raise UserError("give the loop's YAML config: sage-dialog run CONFIG (see configs/)")
    cfg = load_config(LoopConfig, config, overrides_of(args))
    if getattr(args, "threads", None) is not None:  # the flag beats the file's `threads`
        cfg = cfg.model_copy(update={"threads": args.threads})
    try:
        stages = build_stages(cfg)
    except UserError as e:  # name the YAML file the bad section is in
        raise UserError([f"{config}: {p.removeprefix('config: ')}" if p.startswith(("config section", "config: "))
                         else p for p in e.problems]) from None
    if not args.list:
        # every file and model the config names, then the inputs and the run folder, are checked
        # before the run folder is made or any model loads
        from sage_dialog.pipeline.preflight import config_problems

        missing = config_problems(cfg.model_dump(mode="json", by_alias=True, exclude={"run_dir", "cache"}),
                                  config)
        if missing:
            raise UserError(missing)
        check_paths(inputs=[*cfg.raw, *([cfg.search.seeds] if cfg.search.seeds else [])], **run_outputs(cfg, stages))
    if args.list:
        for s in stages:
            print(f"{s.name:12s} after: {', '.join(s.deps) or '-'}")
        return 0
    return run_and_report(cfg, from_stage=args.from_stage, until=args.until, gates=not args.no_gates)


def run_outputs(cfg: object, stages: Sequence[object]) -> dict[str, list[Path]]:
    """What a run writes, for ``check_paths``: a folder per stage and its log (the run folder itself
    also holds the cache and whatever else you keep there, which the run never replaces)."""
    run_dir = Path(cfg.run_dir)  # type: ignore[attr-defined]
    names = [str(getattr(s, "name")) for s in stages]  # noqa: B009 (stages of pipeline.runner)
    return {"folders": [run_dir / n for n in names], "files": [run_dir / "logs" / f"{n}.log" for n in names]}


def run_and_report(cfg: object, *, from_stage: str | None = None, until: str | None = None,
                   gates: bool = True) -> int:
    """Run the loop, print the stage table and the world's results table (shared with ``demo``)."""
    from sage_dialog.pipeline.loop_config import LoopConfig
    from sage_dialog.pipeline.runner import summary_table
    from sage_dialog.pipeline.sage_loop import results_table, run_loop

    assert isinstance(cfg, LoopConfig)
    outcomes = run_loop(cfg, from_stage=from_stage, until=until, gates=gates)
    print()
    print(summary_table(outcomes))
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        print(f"\nstage {failed[0].name} failed: {failed[0].error}\nfix it and run the same command to go on")
        return 1
    gated = [o for o in outcomes if o.gate is not None]
    if gated and gates:
        print(f"\nstopped at a gate: {gated[0].gate}\nthe stage's output is kept in {cfg.run_dir / gated[0].name}; "
              "change the setting (e.g. as KEY=VALUE) or run with --no-gates to go on", file=sys.stderr)
        return 2
    for o in gated:
        print(f"gate failed, ignored (--no-gates): {o.gate}", file=sys.stderr)
    table = results_table(cfg)
    if table is not None:
        print()
        print(table)
        print(f"\nresults and every artifact: {cfg.run_dir}/ (evaluate/results.md, evaluate/results.json)")
    return 0

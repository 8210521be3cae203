"""The stage runner: skipping by fingerprint, re-running exactly what is downstream of a change."""

from __future__ import annotations

from pathlib import Path

import pytest

from sage_dialog.core.errors import UserError
from sage_dialog.pipeline.runner import Stage, StageContext, run_stages, summary_table


def _stages(tmp_path: Path, calls: list[str], cfg: dict[str, int]) -> list[Stage]:
    raw = tmp_path / "raw.txt"

    def a(ctx: StageContext) -> dict[str, int]:
        calls.append("a")
        (ctx.out_dir / "a.txt").write_text(raw.read_text() * cfg["a"])
        return {"n": cfg["a"]}

    def b(ctx: StageContext) -> dict[str, int]:
        calls.append("b")
        (ctx.out_dir / "b.txt").write_text((ctx.dir_of("a") / "a.txt").read_text() + "b" * cfg["b"])
        return {}

    def c(ctx: StageContext) -> dict[str, int]:
        calls.append("c")
        (ctx.out_dir / "c.txt").write_text("c" * cfg["c"])
        return {}

    def d(ctx: StageContext) -> dict[str, int]:
        calls.append("d")
        text = (ctx.dir_of("b") / "b.txt").read_text() + (ctx.dir_of("c") / "c.txt").read_text()
        (ctx.out_dir / "d.txt").write_text(text)
        return {}

    return [
        Stage("a", a, {"a": cfg["a"]}, inputs=[raw]),
        Stage("b", b, {"b": cfg["b"]}, deps=["a"]),
        Stage("c", c, {"c": cfg["c"]}),
        Stage("d", d, {}, deps=["b", "c"]),
    ]


def test_second_run_skips_everything_and_a_change_reruns_only_downstream(tmp_path: Path) -> None:
    (tmp_path / "raw.txt").write_text("x")
    cfg = {"a": 1, "b": 1, "c": 1}
    calls: list[str] = []
    first = run_stages(_stages(tmp_path, calls, cfg), tmp_path / "run", log=lambda _: None)
    assert [o.status for o in first] == ["ran"] * 4
    assert (tmp_path / "run" / "d" / "d.txt").read_text() == "xbc"
    calls.clear()
    again = run_stages(_stages(tmp_path, calls, cfg), tmp_path / "run", log=lambda _: None)
    assert [o.status for o in again] == ["skipped"] * 4 and calls == []
    cfg["c"] = 2
    run_stages(_stages(tmp_path, calls, cfg), tmp_path / "run", log=lambda _: None)
    assert calls == ["c", "d"]
    calls.clear()
    (tmp_path / "raw.txt").write_text("y")  # an input file's content counts, not its name
    run_stages(_stages(tmp_path, calls, cfg), tmp_path / "run", log=lambda _: None)
    assert calls == ["a", "b", "d"]
    assert "skipped" in summary_table(again)


def test_from_and_until(tmp_path: Path) -> None:
    (tmp_path / "raw.txt").write_text("x")
    cfg = {"a": 1, "b": 1, "c": 1}
    calls: list[str] = []
    outcomes = run_stages(_stages(tmp_path, calls, cfg), tmp_path / "run", until="b", log=lambda _: None)
    assert calls == ["a", "b"] and [o.status for o in outcomes][2:] == ["not run", "not run"]
    calls.clear()
    run_stages(_stages(tmp_path, calls, cfg), tmp_path / "run", from_stage="b", log=lambda _: None)
    assert calls == ["b", "c", "d"]
    with pytest.raises(UserError, match="--from nope: no such stage"):
        run_stages(_stages(tmp_path, calls, cfg), tmp_path / "run", from_stage="nope")


def test_a_failing_stage_keeps_finished_work_and_leaves_no_partial_folder(tmp_path: Path) -> None:
    (tmp_path / "raw.txt").write_text("x")
    calls: list[str] = []
    stages = _stages(tmp_path, calls, {"a": 1, "b": 1, "c": 1})

    def boom(ctx: StageContext) -> dict[str, int]:
        (ctx.out_dir / "half.txt").write_text("half")
        raise RuntimeError("disk on fire")

    stages[2] = Stage("c", boom, {"c": 1})
    out = run_stages(stages, tmp_path / "run", log=lambda _: None)
    assert [o.status for o in out] == ["ran", "ran", "failed", "not run"]
    assert "disk on fire" in (out[2].error or "")
    assert not (tmp_path / "run" / "c").exists()
    calls.clear()
    again = run_stages(_stages(tmp_path, calls, {"a": 1, "b": 1, "c": 1}), tmp_path / "run", log=lambda _: None)
    assert calls == ["c", "d"] and [o.status for o in again][:2] == ["skipped", "skipped"]


def test_each_stage_logs_to_its_file_and_a_failed_stage_names_it(tmp_path: Path) -> None:
    import logging

    from sage_dialog.core import console

    def chatty(ctx: StageContext) -> dict[str, int]:
        logging.getLogger("transformers.modeling_utils").info("loading weights of a")
        return {}

    def broken(ctx: StageContext) -> dict[str, int]:
        logging.getLogger("accelerate").info("before the crash")
        raise RuntimeError("out of memory")

    run = tmp_path / "run"
    with console.session(console.NORMAL):
        out = run_stages([Stage("a", chatty, {}), Stage("b", broken, {}, deps=["a"])], run, log=lambda _: None)
    assert [o.status for o in out] == ["ran", "failed"]
    log_b = run / "logs" / "b.log"
    assert out[1].error == f"RuntimeError: out of memory (details in {log_b})"
    assert "loading weights of a" in (run / "logs" / "a.log").read_text()
    text = log_b.read_text()
    assert "before the crash" in text and "Traceback" in text and "loading weights" not in text

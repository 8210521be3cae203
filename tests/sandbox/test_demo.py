"""The shortened demo end to end (slow): every stage runs through the `run` path and the improvement
points the right way; `run` on the shipped config gives the same table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sage_dialog.cli import main
from sage_dialog.sandbox.demo import DEMO_CONFIG, bootstrap_mean, format_table

REPO = Path(__file__).resolve().parents[2]


def test_bootstrap_interval_covers_the_mean_and_shrinks_with_n():
    m, lo, hi = bootstrap_mean([0.0, 1.0] * 10, 2000, 0)
    assert m == 0.5 and lo < 0.5 < hi
    _, lo2, hi2 = bootstrap_mean([0.0, 1.0] * 200, 2000, 0)
    assert hi2 - lo2 < hi - lo


def test_bad_settings_are_user_errors(tmp_path, capsys):
    assert main(["demo", "-o", str(tmp_path / "x"), "--set", "no_such=1"]) == 2
    assert "no_such" in capsys.readouterr().err
    assert main(["demo", "-o", str(tmp_path / "x"), "--set", "world.eval.no_such=1", "--list"]) == 2
    assert "world.eval" in capsys.readouterr().err
    assert main(["demo", "-o", str(tmp_path / "x"), "--threads", "0"]) == 2


def test_the_shipped_config_is_the_demo_config_and_names_its_command():
    shipped = (REPO / "configs" / "demo-sandbox.yaml").read_text()
    assert shipped == DEMO_CONFIG.read_text()  # the package's copy (what `demo` runs) cannot drift
    assert shipped.startswith("# sage-dialog run configs/demo-sandbox.yaml")


def test_demo_and_run_build_the_same_stages(tmp_path, capsys):
    assert main(["demo", "-o", str(tmp_path / "d"), "--list"]) == 0
    demo = capsys.readouterr().out
    assert main(["run", str(REPO / "configs" / "demo-sandbox.yaml"), f"run_dir={tmp_path / 'd'}", "--list"]) == 0
    assert capsys.readouterr().out == demo
    assert [line.split()[0] for line in demo.splitlines()] == [
        "world", "annotate", "chain", "mix", "base", "sft", "search-r1", "prefs-r1", "sft-r1", "dpo", "evaluate"]


STAGES = ("world", "annotate", "chain", "mix", "base", "sft", "search-r1", "prefs-r1", "sft-r1", "dpo", "evaluate")


@pytest.mark.slow
def test_quick_demo_improves_on_m1(tmp_path: Path, capsys, monkeypatch):
    out = tmp_path / "demo"
    monkeypatch.chdir(tmp_path)  # a relative -o, as the README's main command gives it
    assert main(["demo", "-o", "demo", "--quick", "--no-progress"]) == 0
    res = json.loads((out / "evaluate" / "results.json").read_text())
    m = res["models"]
    # the direction of the improvement (the full demo also asks for a 95% interval above zero)
    assert m["DPO"]["reward"] > m["M1"]["reward"]
    assert m["M2"]["reward"] > m["M1"]["reward"]
    assert max(m["DPO"]["diff_vs_m1"], m["M2"]["diff_vs_m1"]) > 0
    assert m["DPO"]["fitting_share"] > m["M1"]["fitting_share"]
    assert m["DPO"]["win_vs_m1"]["win_rate"] > 0.5
    assert res["steering"]["compliance"] >= 0.7
    assert res["annotation"]["all"] >= 0.99 and res["annotation"]["turns"] > 1000
    # the oracle judge's trust figures: never swayed by an injected instruction, never changes its mind
    t = res["judge_trust"]
    assert t["judge"] == "oracle-pairwise" and t["canaries"] == 24 and t["canary_flips"] == 0
    assert t["asked_again"] == 8 and t["changed"] == 0 and t["flipped"] == 0
    # every stage finished through the stage runner, left its artifacts, and the table was printed
    for stage in STAGES:
        assert json.loads((out / stage / "manifest.json").read_text())["finished"], stage
    assert not list(out.rglob(".done"))
    assert (out / "search-r1" / "trees").is_dir() and (out / "prefs-r1" / "pairs.jsonl").exists()
    assert (out / "evaluate" / "compare" / "report.html").exists()
    assert "injection canary flips 0 of 24" in (out / "evaluate" / "results.md").read_text()
    assert "### How far the judges can be trusted" in (out / "evaluate" / "compare" / "report.md").read_text()
    table = (out / "evaluate" / "results.md").read_text()
    printed = capsys.readouterr().out
    assert table == format_table(res) + "\n" and table.rstrip("\n") in printed and "| DPO |" in printed
    # a second run on the same folder skips every stage; `run` on the shipped config gives the same table
    quick = [f"{o}" for o in __import__("sage_dialog.sandbox.plugin", fromlist=["QUICK"]).QUICK]
    assert main(["run", str(REPO / "configs" / "demo-sandbox.yaml"), "run_dir=demo", *quick]) == 0
    printed = capsys.readouterr().out
    assert printed.count("unchanged, skipped") == len(STAGES) and table.rstrip("\n") in printed


def test_flipped_conversations_teach_the_user_side():
    from sage_dialog.sandbox import corpus, world
    from sage_dialog.sandbox.demo import flipped_conversations

    dialogs = corpus.generate_corpus(corpus.CorpusConfig(n_dialogs=20, seed=2))
    rows = flipped_conversations(dialogs)
    assert len(rows) == 20
    for d, row in zip(dialogs, rows, strict=True):
        msgs = row["messages"]
        assert msgs[0]["role"] == "assistant" and msgs[-1]["role"] == "assistant"
        users = [t.text for t in d.turns if t.role == "user"]
        assert [m["content"] for m in msgs if m["role"] == "assistant"] == users
        assert all(world.read_state(m["content"]) for m in msgs if m["role"] == "assistant")

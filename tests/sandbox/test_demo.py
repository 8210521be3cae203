"""The shortened demo end to end (slow): every stage runs and the improvement points the right way."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sage_dialog.cli import main
from sage_dialog.sandbox.demo import DemoConfig, bootstrap_mean, format_table


def test_bootstrap_interval_covers_the_mean_and_shrinks_with_n():
    m, lo, hi = bootstrap_mean([0.0, 1.0] * 10, 2000, 0)
    assert m == 0.5 and lo < 0.5 < hi
    _, lo2, hi2 = bootstrap_mean([0.0, 1.0] * 200, 2000, 0)
    assert hi2 - lo2 < hi - lo


def test_bad_settings_are_user_errors(tmp_path, capsys):
    assert main(["demo", "-o", str(tmp_path / "x"), "--set", "no_such=1"]) == 2
    assert "unknown demo setting" in capsys.readouterr().err
    assert main(["demo", "-o", str(tmp_path / "x"), "--threads", "0"]) == 2


def test_demo_refuses_a_folder_with_other_settings(tmp_path, capsys):
    out = tmp_path / "d"
    out.mkdir()
    (out / "demo_config.json").write_text(json.dumps({**DemoConfig().model_dump(), "seed": 99}))
    assert main(["demo", "-o", str(out)]) == 2
    assert "other settings" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_demo_improves_on_m1(tmp_path: Path, capsys, monkeypatch):
    out = tmp_path / "demo"
    monkeypatch.chdir(tmp_path)  # a relative -o, as the README's main command gives it
    assert main(["demo", "-o", "demo", "--quick", "--no-progress"]) == 0
    res = json.loads((out / "results.json").read_text())
    m = res["models"]
    # the direction of the improvement (the full demo also asks for a 95% interval above zero)
    assert m["DPO"]["reward"] > m["M1"]["reward"]
    assert m["M2"]["reward"] > m["M1"]["reward"]
    assert max(m["DPO"]["diff_vs_m1"], m["M2"]["diff_vs_m1"]) > 0
    assert m["DPO"]["fitting_share"] > m["M1"]["fitting_share"]
    assert m["DPO"]["win_vs_m1"]["win_rate"] > 0.5
    assert res["steering"]["compliance"] >= 0.7
    assert res["annotation"]["all"] >= 0.99 and res["annotation"]["turns"] > 1000
    # every stage left its artifacts, and the table was printed and written
    for stage in ("corpus", "annotate", "chain", "mix", "sft", "search", "prefs", "rft", "dpo", "eval", "compare", "steer"):
        assert (out / stage / ".done").exists(), stage
    assert (out / "search" / "out" / "trees").is_dir() and (out / "prefs" / "pairs.jsonl").exists()
    assert (out / "compare" / "out" / "report.html").exists()
    table = (out / "results.md").read_text()
    assert table == format_table(res) + "\n" and "| DPO |" in capsys.readouterr().out
    # a second run on the same folder skips every stage
    assert main(["demo", "-o", "demo", "--quick", "--no-progress"]) == 0
    assert "skipped" in capsys.readouterr().err


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

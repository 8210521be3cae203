"""compare end to end: real tiny models through the CLI, resuming, per-turn mode, input errors."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from sage_dialog.cli import main
from sage_dialog.core.schema import Dialog, Turn, Verdict
from sage_dialog.roles.protocols import PairTask
from sage_dialog.stages.compare.compare import judge_all, run_compare

SEEDS = ["I failed my driving test again.", "My sister is getting married next week!",
         "I can't sleep before my exam."]


@pytest.fixture(scope="module")
def second_tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another tiny model with different random weights: a second, different model to compare."""
    from sage_dialog.sandbox.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model-2"), seed=1)


def _read(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


@pytest.mark.slow
def test_compare_two_tiny_models_end_to_end(tiny_model: Path, second_tiny_model: Path, tmp_path: Path) -> None:
    seeds = tmp_path / "seeds.txt"
    seeds.write_text("\n".join(SEEDS) + "\n")
    out = tmp_path / "out"
    argv = ["compare", "--model", f"m0=hf:{tiny_model}", "--model", f"m1=hf:{second_tiny_model}",
            "--seeds", str(seeds), "--user", f"hf:{tiny_model}", "--judge", f"hf:{tiny_model}", "--judge", "oracle",
            "--turns", "2", "--per-turn", "--bootstrap", "200", "--set", "sampling.max_tokens=12",
            "--cache", str(tmp_path / "cache.sqlite"), "--no-progress", "-o", str(out)]
    assert main(argv) == 0
    verdicts = [Verdict.model_validate(v) for v in _read(out / "verdicts.jsonl")]
    whole = [v for v in verdicts if v.unit == "dialog"]
    per_turn = [v for v in verdicts if v.unit == "turn"]
    assert len(whole) == 3 * 2 * 2  # seeds x orders x judges
    assert len(per_turn) == 3 * 2 * 2 * 2  # 2 assistant turns per seed
    llm = [v for v in whole if v.judge.startswith("pairwise:hf:")]
    assert len(llm) == 6 and all(v.probs is not None for v in llm)
    assert all(v.parsed == (v.winner is not None) for v in verdicts)
    assert {v.shown_first for v in whole} == {"a", "b"}
    dialogs = _read(out / "dialogs" / "m0.jsonl")
    assert [d["meta"]["seed"] for d in dialogs] == SEEDS
    assert all(len(d["turns"]) == 4 for d in dialogs)  # user, assistant, user, assistant
    folder = out / "judgements" / "m0__vs__m1"
    names = sorted(p.name for p in folder.iterdir())
    assert names[:2] == ["combined_predictions.tsv", "consensus_predictions.tsv"]
    assert "oracle-pairwise.json" in names and "oracle-pairwise_rev.json" in names
    assert len(names) == 6 and sum(n.endswith("_rev.json") for n in names) == 2
    summary = json.loads((out / "summary.json").read_text())
    units = sorted(p["unit"] for p in summary["pairs"])
    assert units == ["dialog", "turn"]
    assert {j["judge"] for j in summary["judges"]} == {v.judge for v in verdicts}
    assert "m0 vs m1" in (out / "report.md").read_text()
    assert (out / "manifest.json").is_file() and not (out / "verdicts.partial.jsonl").exists()
    # a second run on the same folder is answered from the response cache and gives the same verdicts
    assert main(argv) == 0
    assert [Verdict.model_validate(v) for v in _read(out / "verdicts.jsonl")] == verdicts


class CountingJudge:
    """A scripted judge that prefers the longer dialog and can fail after some calls (to test resume)."""

    name = "counting"

    def __init__(self, fail_after: int | None = None):
        self.calls = 0
        self.tasks = 0
        self.fail_after = fail_after

    async def compare(self, tasks: Sequence[PairTask]) -> list[Verdict]:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("judge crashed")
        self.calls += 1
        self.tasks += len(tasks)
        from sage_dialog.roles.pairwise_judge import make_verdict

        out = []
        for t in tasks:
            la, lb = (sum(len(x.text) for x in s) for s in (t.a, t.b))
            shown = "tie" if la == lb else ("A" if (la > lb) != t.swap else "B")
            out.append(make_verdict(t, self.name, "Tie" if shown == "tie" else f"Dialog {shown} is better", shown))
        return out


def _dialogs(n: int) -> dict[str, list[Dialog]]:
    return {m: [Dialog(id=f"{m}{i}", turns=[Turn(role="user", text=f"seed number {i}"),
                                            Turn(role="assistant", text="{a_motivation: comfort} " + "ok " * k)])
                for i in range(n)] for k, m in ((1, "short"), (3, "long"), (2, "mid"))}


def test_killed_judging_resumes_without_asking_again(tmp_path: Path) -> None:
    tasks = [PairTask(seed=f"s{i}", model_a="x", model_b="y", a=[Turn(role="assistant", text="aa")],
                      b=[Turn(role="assistant", text="b")], swap=bool(i % 2)) for i in range(10)]
    journal = tmp_path / "v.partial.jsonl"
    crashing = CountingJudge(fail_after=2)
    with pytest.raises(RuntimeError):
        asyncio.run(judge_all([crashing], tasks, journal, chunk=3, progress=False))
    assert len(journal.read_text().splitlines()) == 6
    again = CountingJudge()
    verdicts = asyncio.run(judge_all([again], tasks, journal, chunk=3, progress=False))
    assert again.tasks == 4 and len(verdicts) == 10
    assert [v.seed for v in verdicts] == [t.seed for t in tasks]
    assert all(v.winner == "a" for v in verdicts)
    # a task whose dialogs changed (another run, other samples) is judged again, not taken from the journal
    tasks[0] = PairTask(seed="s0", model_a="x", model_b="y", a=[Turn(role="assistant", text="a")],
                        b=[Turn(role="assistant", text="bbb")])
    third = CountingJudge()
    verdicts = asyncio.run(judge_all([third], tasks, journal, chunk=3, progress=False))
    assert third.tasks == 1 and verdicts[0].winner == "b"


def test_three_models_get_a_ranking_and_tags_are_stripped_before_judging(tmp_path: Path) -> None:
    rep = run_compare(_dialogs(12), [CountingJudge()], tmp_path, n_boot=200, progress=False)
    assert [(p.model_a, p.model_b) for p in rep.pairs] == [("short", "long"), ("short", "mid"), ("long", "mid")]
    assert rep.pair("short", "long").win_rate == 0.0 and rep.pair("long", "mid").win_rate == 1.0
    assert rep.ranking is not None and rep.ranking.rank == [3, 1, 2]
    verdicts = _read(tmp_path / "verdicts.jsonl")
    assert len(verdicts) == 3 * 12 * 2
    assert {v["length_a"] for v in verdicts if v["model_a"] == "short"} == {1}  # the tag is not counted
    assert {x.model: x.mean_words for x in rep.lengths} == {"short": 1.0, "long": 3.0, "mid": 2.0}


def test_dialogs_from_transcript_folders_and_jsonl(tmp_path: Path) -> None:
    from sage_dialog.formats.transcripts import write_transcript_dir

    d = _dialogs(4)
    write_transcript_dir(tmp_path / "short_tx", d["short"])
    from sage_dialog.core import io

    io.write_jsonl(tmp_path / "long.jsonl", d["long"])
    out = tmp_path / "out"
    assert main(["compare", "--dialogs", f"short={tmp_path / 'short_tx'}", "--dialogs", f"long={tmp_path / 'long.jsonl'}",
                 "--judge", "oracle", "--bootstrap", "100", "--no-progress", "-o", str(out)]) == 0
    assert len(_read(out / "verdicts.jsonl")) == 4 * 2


def test_config_file_with_overrides(tmp_path: Path) -> None:
    from sage_dialog.core import io

    for m, ds in _dialogs(3).items():
        io.write_jsonl(tmp_path / f"{m}.jsonl", ds)
    cfg = tmp_path / "compare.yaml"
    cfg.write_text(f"out: {tmp_path / 'out'}\ndialogs: {{a: {tmp_path / 'short.jsonl'}, b: {tmp_path / 'long.jsonl'}}}\n"
                   "judges: [oracle]\ntitle: From YAML\n")
    assert main(["compare", "--config", str(cfg), "--set", "bootstrap=100", "--no-progress"]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["title"] == "From YAML" and summary["n_boot"] == 100
    cfg.write_text(cfg.read_text() + "unknown_key: 1\n")
    assert main(["compare", "--config", str(cfg)]) == 2


def test_input_errors_are_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"kind": "dialog", "id": "x", "turns": [{"role": "robot", "text": "hi"}]}\n')
    assert main(["compare", "--dialogs", f"a={bad}", "--dialogs", f"b={bad}", "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl: record 1: field turns[0].role" in err
    assert main(["compare", "--dialogs", f"a={bad}", "-o", str(tmp_path / "o")]) == 2
    assert "at least two models" in capsys.readouterr().err
    assert main(["compare", "--model", "nonsense", "-o", str(tmp_path / "o")]) == 2
    assert "NAME=VALUE" in capsys.readouterr().err
    assert main(["compare", "--model", "a=hf:x", "--model", "b=hf:y", "-o", str(tmp_path / "o")]) == 2
    assert "seeds" in capsys.readouterr().err
    assert main(["compare", "--dialogs", f"a={bad}", "--dialogs", f"b={bad}", "--set", "turns=0"]) == 2
    assert "turns" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    from sage_dialog.core import io

    io.write_jsonl(tmp_path / "x.jsonl", [Dialog(id="1", turns=[Turn(role="user", text="hello")])])
    io.write_jsonl(tmp_path / "y.jsonl", [Dialog(id="1", turns=[Turn(role="user", text="other seed")])])
    assert main(["compare", "--dialogs", f"x={tmp_path / 'x.jsonl'}", "--dialogs", f"y={tmp_path / 'y.jsonl'}",
                 "-o", str(tmp_path / "o")]) == 2
    assert "share no seed" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing half-made


def test_backend_options_reach_the_user_and_judge_given_as_specs(tiny_model: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """compare's backend_options (a loop passes its own, e.g. dtype: fast) go to every hf: spec it loads,
    so the user and judge share one base with the compared models instead of loading a second copy."""
    from sage_dialog.roles import factory

    seen: list[tuple[str, dict]] = []
    real = factory.load_backend

    def spy(cfg):  # type: ignore[no-untyped-def]
        seen.append((cfg.spec, dict(cfg.options)))
        return real(cfg)

    monkeypatch.setattr(factory, "load_backend", spy)
    seeds = tmp_path / "seeds.txt"
    seeds.write_text(SEEDS[0] + "\n")
    argv = ["compare", "--model", f"m0=hf:{tiny_model}", "--model", f"m1=hf:{tiny_model}", "--seeds", str(seeds),
            "--user", f"hf:{tiny_model}", "--judge", f"hf:{tiny_model}", "--turns", "1",
            "--set", "sampling.max_tokens=4", "--set", "canaries=false", "--set", "stability_sample=0",
            "--set", "backend_options.share_prompt=false", "--no-progress", "-o", str(tmp_path / "out")]
    assert main(argv) == 0
    assert seen and all(opts == {"share_prompt": False} for _, opts in seen)

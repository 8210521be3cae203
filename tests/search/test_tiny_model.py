"""The search on the real in-process transformers backend (tiny random model: garbage text, real plumbing)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from sage_dialog.backends.base import SamplingParams, load_backend
from sage_dialog.core.schema import Turn
from sage_dialog.roles.protocols import SelectionTask
from sage_dialog.roles.rollout import play_dialogs
from sage_dialog.roles.sampling import SamplingConfig
from sage_dialog.roles.selector import LLMSelector
from sage_dialog.roles.user_simulator import LLMUserSimulator
from sage_dialog.stages.search.config import SearchConfig
from sage_dialog.stages.search.search import run_search
from sage_dialog.stages.search.tree import best_path, read_tree

SEEDS = ["I failed my driving test again.", "My sister is getting married!"]


@pytest.fixture(scope="module")
def hf(tiny_model: Path):
    return load_backend(f"hf:{tiny_model}")


def _cfg(**kw) -> SearchConfig:
    return SearchConfig(turns=2, candidates=2, sampling=SamplingConfig(max_tokens=8), **kw)


def _user(be):
    return LLMUserSimulator(be, sampling=SamplingParams(temperature=0.95, top_k=50, max_tokens=8))


def test_logprob_judge_on_garbage_still_decides(hf):
    tasks = [SelectionTask(history=[Turn(role="user", text="hi")],
                           candidates=[Turn(role="assistant", text=t) for t in ("a", "Response 1 is better", "c")],
                           seed=s) for s in range(3)]
    ds = asyncio.run(LLMSelector(hf, mode="logprob").select(tasks))
    for d in ds:
        assert d.outcome == "chosen" and d.scores is not None and d.choice == max(range(3), key=d.scores.__getitem__)
    gen = asyncio.run(LLMSelector(hf, mode="generate").select(tasks))
    assert all(d.outcome in ("chosen", "none_good", "unparsed") and d.mode == "generate" for d in gen)


def test_play_dialogs_on_hf(hf):
    ds = asyncio.run(play_dialogs(hf, _user(hf), SEEDS, turns=2, sampling=SamplingParams(max_tokens=8), seed=1))
    assert [[t.role for t in d.turns] for d in ds] == [["user", "assistant", "user", "assistant"]] * 2
    again = asyncio.run(play_dialogs(hf, _user(hf), SEEDS, turns=2, sampling=SamplingParams(max_tokens=8), seed=1))
    assert [d.turns for d in again] == [d.turns for d in ds]  # seeded sampling is reproducible


@pytest.mark.parametrize("strategy", ["best_of_n", "beam", "lookahead"])
def test_search_end_to_end_on_tiny_model(hf, tmp_path, strategy):
    out = run_search(hf, _user(hf), LLMSelector(hf, mode="logprob"), SEEDS, _cfg(strategy=strategy), tmp_path,
                     transcripts=False)
    for i in range(2):
        nodes = read_tree(out / "trees" / f"seed-{i:04d}.jsonl")
        assert [n.role for n in best_path(nodes)] == ["user", "assistant", "user", "assistant"]
        assert all(n.decision is not None and n.decision.scores for n in nodes if n.role == "assistant"
                   and not n.sampling.get("lookahead"))


def test_resume_on_hf_gives_the_same_tree(hf, tmp_path):
    full = run_search(hf, _user(hf), LLMSelector(hf, mode="logprob"), SEEDS, _cfg(), tmp_path / "a", transcripts=False)

    class Killed(Exception):
        pass

    calls = {"n": 0}
    real_generate = hf.generate

    async def dying(reqs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise Killed
        return await real_generate(reqs)

    hf.generate = dying
    try:
        with pytest.raises(Killed):
            run_search(hf, _user(hf), LLMSelector(hf, mode="logprob"), SEEDS, _cfg(), tmp_path / "b", transcripts=False)
    finally:
        del hf.generate
    resumed = run_search(hf, _user(hf), LLMSelector(hf, mode="logprob"), SEEDS, _cfg(), tmp_path / "b",
                         transcripts=False)
    for i in range(2):
        name = f"trees/seed-{i:04d}.jsonl"
        assert (resumed / name).read_bytes() == (full / name).read_bytes()
    man = json.loads((resumed / "manifest.json").read_text())
    # per seed: candidates, judge (a scoring call) and user reply were journaled before the 3rd generate died
    assert man["usage"]["replayed_calls"] == 2 * 3


def test_cli_search_and_errors(tiny_model, tmp_path):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text('"I lost my keys."\n{"text": "Guess what, I got the job!"}\n', encoding="utf-8")
    cmd = [sys.executable, "-m", "sage_dialog", "search", str(seeds), "--assistant", f"hf:{tiny_model}",
           "--judge-mode", "logprob", "--turns", "1", "--candidates", "2", "--max-tokens", "6", "--no-progress",
           "-o", str(tmp_path / "out")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert len((tmp_path / "out" / "best.jsonl").read_text().splitlines()) == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"nope": 1}\n', encoding="utf-8")
    r = subprocess.run([*cmd[:4], str(bad), *cmd[5:]], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "bad.jsonl: record 2" in r.stderr and "Traceback" not in r.stderr
    h = subprocess.run([sys.executable, "-m", "sage_dialog", "search", "--help"], capture_output=True, text=True)
    assert h.returncode == 0 and "Example:" in h.stdout


@pytest.mark.slow
def test_cli_search_killed_with_sigkill_resumes_to_the_same_tree(tiny_model, tmp_path):
    import os
    import signal
    import time

    seeds = tmp_path / "seeds.txt"
    seeds.write_text("I lost my keys.\nGuess what, I got the job!\n", encoding="utf-8")

    def cmd(out: Path) -> list[str]:
        return [sys.executable, "-m", "sage_dialog", "search", str(seeds), "--assistant", f"hf:{tiny_model}",
                "--judge-mode", "logprob", "--turns", "3", "--candidates", "2", "--max-tokens", "8",
                "--user-max-tokens", "8", "--no-progress", "-o", str(out)]

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    assert subprocess.run(cmd(tmp_path / "a"), capture_output=True, env=env, timeout=600).returncode == 0
    proc = subprocess.Popen(cmd(tmp_path / "b"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    journal = tmp_path / "b" / "journal"
    deadline = time.time() + 300
    while time.time() < deadline:
        lines = sum(len(p.read_bytes().splitlines()) for p in journal.glob("*.jsonl")) if journal.exists() else 0
        if lines >= 4:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert not (tmp_path / "b" / "best.jsonl").exists(), "the search finished before it could be killed"
    r = subprocess.run(cmd(tmp_path / "b"), capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    for i in range(2):
        name = f"trees/seed-{i:04d}.jsonl"
        assert (tmp_path / "b" / name).read_bytes() == (tmp_path / "a" / name).read_bytes()
    man = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert man["usage"]["replayed_calls"] >= 4
    assert (tmp_path / "b" / "best.jsonl").read_bytes() == (tmp_path / "a" / "best.jsonl").read_bytes()

"""Ctrl-C and SIGTERM: the command ends with 130 / 143, leaves no hidden temporary file or partial
stage folder, and says what it kept for resuming (the response cache, finished stages)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from sage_dialog.core.io import write_jsonl
from sage_dialog.sandbox.corpus import CorpusConfig, generate_corpus

SCRIPT = textwrap.dedent('''
    import asyncio, sys
    from pathlib import Path
    from sage_dialog.backends.base import Backend, ChatResult, Completion, register_provider

    class Slow(Backend):
        """An annotator model that answers every 0.2 s (not in JSON) and leaves a mark once it has."""
        provider = "slow"

        async def generate(self, requests):
            await asyncio.sleep(0.2)
            Path(sys.argv[1]).touch()
            return [ChatResult([Completion("not json", tokens_out=2)] * r.n, tokens_in=3) for r in requests]

    register_provider("slow", Slow)
    from sage_dialog.cli import main
    sys.exit(main(sys.argv[2:]))
''')


def _hidden(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob(".*"))


@pytest.mark.parametrize(("command", "sig", "code"), [("annotate", signal.SIGTERM, 143), ("run", signal.SIGINT, 130)])
def test_an_interrupted_command_leaves_no_temporary_files_and_says_what_it_kept(
        tmp_path: Path, tiny_model: Path, command: str, sig: signal.Signals, code: int) -> None:
    corpus = generate_corpus(CorpusConfig(n_dialogs=40, seed=1))
    work = tmp_path / "work"
    work.mkdir()
    write_jsonl(work / "raw.jsonl", [d.model_copy(update={"meta": {}}) for d in corpus])
    (tmp_path / "slow.py").write_text(SCRIPT, encoding="utf-8")
    if command == "annotate":
        args = ["annotate", str(work / "raw.jsonl"), "-o", str(work / "annotated.jsonl"), "--annotator", "slow:m",
                "--cache", str(work / "cache.sqlite"), "--chunk-size", "1", "--max-attempts", "1"]
        cache = work / "cache.sqlite"
    else:
        (work / "seeds.txt").write_text("hello there\n", encoding="utf-8")
        cfg = {"run_dir": str(work / "run"), "base_model": str(tiny_model), "raw": [str(work / "raw.jsonl")],
               "annotate": {"annotator": "slow:m", "chunk_size": 1, "max_attempts": 1},
               "search": {"seeds": str(work / "seeds.txt")}}
        (tmp_path / "loop.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
        args = ["run", str(tmp_path / "loop.yaml")]
        cache = work / "run" / "cache.sqlite"
    mark = tmp_path / "answered"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.Popen([sys.executable, str(tmp_path / "slow.py"), str(mark), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not mark.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the slow model was never asked"
        time.sleep(0.05)
    time.sleep(0.5)  # a few more answers: the output's temporary file is open now
    assert _hidden(work), "expected a temporary file or partial folder while it runs"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert _hidden(work) == []  # no .annotated.jsonl.*.tmp, no .annotate.partial
    assert f"interrupted ({sig.name})" in err and "kept for resuming" in err
    assert f"{cache}: response cache" in err and cache.exists()
    assert not (work / "annotated.jsonl").exists() and not (work / "run" / "annotate").exists()
    assert "Traceback" not in err

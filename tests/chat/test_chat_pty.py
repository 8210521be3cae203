"""Drive `sage-dialog chat` as a person would, in a pseudo-terminal (pexpect)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from sage_dialog.core import io as sio
from sage_dialog.core import sac
from sage_dialog.core.schema import Dialog, Tags

pexpect = pytest.importorskip("pexpect")

PROMPT = "you> "


@pytest.mark.slow
def test_chat_session_in_a_pty(tiny_model: Path, tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONIOENCODING": "utf-8", "TOKENIZERS_PARALLELISM": "false"}
    child = pexpect.spawn(
        sys.executable,
        ["-m", "sage_dialog", "chat", "--model", f"hf:{tiny_model}", "--max-tokens", "12", "--seed", "1"],
        env=env,
        cwd=str(tmp_path),
        encoding="utf-8",
        timeout=120,
        dimensions=(40, 200),
    )
    try:
        child.expect_exact("/help for commands")
        child.expect_exact(PROMPT)
        child.sendline("/help")
        child.expect_exact("/steer KEY=VALUE")
        child.expect_exact(PROMPT)

        # a plain turn: the latent lines come (formatted, not raw braces) and then the reply
        child.sendline("I failed my exam again.")
        child.expect_exact("state read  :")
        child.expect_exact("action      :")
        child.expect_exact("bot> ")
        child.expect_exact(PROMPT)

        # steer the last reply and regenerate: the action shown is the forced one
        child.sendline("/steer a_emotion=playful a_motivation=joke a_topic=exam")
        child.expect_exact("next turn steered: a_motivation=joke, a_emotion=playful, a_topic=exam")
        child.expect_exact(PROMPT)
        child.sendline("/regen")
        child.expect_exact("action      : motivation joke · emotion playful · topics exam")
        child.expect_exact(PROMPT)

        child.sendline("/alts 2")
        child.expect_exact("[2] ")
        child.expect_exact("/pick K")
        child.expect_exact(PROMPT)

        child.sendline("/steer mood=happy")
        child.expect_exact("error: /steer: unknown key 'mood'")
        child.expect_exact(PROMPT)

        child.sendline("/save saved/dialog.jsonl")
        child.expect_exact("(saved 2 turns to saved/dialog.jsonl)")
        child.expect_exact(PROMPT)
        child.sendline("/save dialog.txt")
        child.expect_exact("(saved 2 turns")
        child.expect_exact(PROMPT)

        child.sendline("/clear")
        child.expect_exact("(new dialog)")
        child.expect_exact(PROMPT)
        child.sendline("/quit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0

    (dialog,) = list(sio.read_jsonl(tmp_path / "saved" / "dialog.jsonl", Dialog))
    assert [t.role for t in dialog.turns] == ["user", "assistant"]
    assert dialog.turns[0].text == "I failed my exam again."
    assert dialog.turns[1].action == Tags(motivation="joke", emotion="playful", topics=["exam"])

    lines = (tmp_path / "dialog.txt").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "🧑‍💻: I failed my exam again."
    assert lines[1].startswith("🤖: {")
    assert sac.parse(lines[1].split(": ", 1)[1]).action == Tags(motivation="joke", emotion="playful", topics=["exam"])


def test_chat_bad_options_exit_2(tiny_model: Path) -> None:
    from sage_dialog.cli import main

    assert main(["chat", "--model", "nosuch:x"]) == 2
    assert main(["chat", "--model", f"hf:{tiny_model}", "--max-tokens", "0"]) == 2
    assert main(["chat", "--model", f"hf:{tiny_model}", "--steer", "bogus=1"]) == 2

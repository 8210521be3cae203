"""Persona prompts (template files under ``sage_dialog/prompts``) and small helpers shared by self-play.

``load_prompt("persona_user")`` reads a packaged prompt; any other value is taken as a file path, so
people can bring their own personas (``--user-persona my_user.txt``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from sage_dialog.core.errors import UserError

PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"

DEFAULT_USER_PERSONA = "persona_user"
DEFAULT_ASSISTANT_PERSONA = "persona_assistant"
HUMOR_ASSISTANT_PERSONA = "persona_assistant_humor"


def load_prompt(name_or_path: str | Path) -> str:
    """Text of a packaged prompt (``persona_user``, ``selector_humor``...) or of a file path."""
    s = str(name_or_path)
    packaged = PROMPTS_DIR / f"{s}.txt"
    if "/" not in s and "\\" not in s and packaged.is_file():
        return packaged.read_text(encoding="utf-8").strip()
    p = Path(s)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        known = ", ".join(sorted(f.stem for f in PROMPTS_DIR.glob("*.txt")))
        raise UserError(f"{p}: no such prompt file (packaged prompts: {known})") from None
    except (IsADirectoryError, UnicodeDecodeError) as e:
        raise UserError(f"{p}: cannot read prompt file ({e.__class__.__name__})") from None
    if not text.strip():
        raise UserError(f"{p}: empty prompt file")
    return text.strip()


def derive_seed(*parts: object) -> int:
    """A stable 31-bit seed from any parts (the same on every run and machine, unlike ``hash``)."""
    h = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:4], "big") & 0x7FFFFFFF

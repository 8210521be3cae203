"""Named chat templates with ``{% generation %}`` markers, for models that have none (or a bad one).

The markers wrap each assistant turn's content *and* its end-of-turn token, so the loss mask covers
what the model must learn to write, stop included. The template used in training is saved with the
model (``chat_template.jinja``) and reused at inference.
"""

from __future__ import annotations

import re
from pathlib import Path

from sage_dialog.backends.chat_templates import CHATML, GEMMA, LLAMA3, MISTRAL, PHI3, TEMPLATES
from sage_dialog.core.errors import UserError

_GEN_RE = re.compile(r"\{%-?\s*generation\s*-?%\}")


def has_generation_markers(template: str | None) -> bool:
    return bool(template) and bool(_GEN_RE.search(template or ""))


def resolve_template(spec: str) -> str:
    """A template by name (``chatml``, ``mistral``, ``gemma``, ``llama3``, ``phi3``) or from a ``.jinja`` file."""
    if spec in TEMPLATES:
        return TEMPLATES[spec]
    p = Path(spec)
    if p.suffix in (".jinja", ".j2", ".txt") or p.exists():
        try:
            return p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UserError(f"model.chat_template: {p}: no such file") from None
    raise UserError(
        f"model.chat_template: unknown template {spec!r}; use one of {sorted(TEMPLATES)} or a path to a .jinja file"
    )


def chatml_tokens() -> list[str]:
    """Special tokens the chatml template needs in the vocabulary."""
    return ["<|im_start|>", "<|im_end|>"]


__all__ = ["CHATML", "GEMMA", "LLAMA3", "MISTRAL", "PHI3", "TEMPLATES", "chatml_tokens", "has_generation_markers",
           "resolve_template"]

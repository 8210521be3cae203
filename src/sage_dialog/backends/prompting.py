"""How a chat request becomes the text a local model reads: the chat template, and prefill healing.

Shared by the in-process backends (``hf``, ``vllm``), by ``openai`` where it renders prompts for
a completions endpoint, and by ``serve`` to count prompt tokens. Nothing here imports torch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from sage_dialog.backends.base import Message


def render_prompt(tokenizer: Any, messages: Sequence[Message], prefill: str | None) -> str:
    """Render ``messages`` for generation; the assistant turn starts with ``prefill`` (kept exact)."""
    msgs = [dict(m) for m in messages]
    if getattr(tokenizer, "chat_template", None) is None:
        # A base model without a template: a plain, documented fallback rather than an error.
        text = "".join(f"{m['role']}: {m['content']}\n" for m in msgs) + "assistant: "
        return text + (prefill or "")
    if prefill:
        try:
            text = tokenizer.apply_chat_template(
                [*msgs, {"role": "assistant", "content": prefill}],
                continue_final_message=True,
                tokenize=False,
            )
            # continue_final_message strips surrounding whitespace; only trust it when exact.
            if isinstance(text, str) and text.endswith(prefill):
                return text
        except Exception:  # templates that cannot continue a turn: fall through
            pass
    text = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    return str(text) + (prefill or "")


def heal_prefill(prefill: str | None, tokenizer: Any = None) -> tuple[str | None, str]:
    """``(prefill to render, spaces the completion starts with)``: trailing spaces move out of the prompt.

    BPE tokenizers put a word's leading space in the word's token (`` I``), so a prompt that ends in
    a lone space token is one the model never saw in training: after a steering prefill ending in
    ``"} "`` SmolLM2 began 16 of 24 replies with digits ("2017 ...", "10 years ago ..."). The model
    writes the space itself instead, and :func:`drop_healed` takes it off the completion, so
    ``prefill + completion`` reads as before. With ``tokenizer``, only where that tokenizer does
    merge the space into the next word (:func:`merges_spaces`): where a space is a token of its own
    in running text (the sandbox's tiny model), the prompt keeps it, as the model saw in training.
    """
    if not prefill or not prefill.endswith(" "):
        return prefill, ""
    if tokenizer is not None and not merges_spaces(tokenizer):
        return prefill, ""
    kept = prefill.rstrip(" ")
    return kept or None, prefill[len(kept):]


_PROBES = ("I", "the", "you", "it", "that", "am", "so", "what")


def merges_spaces(tokenizer: Any) -> bool:
    """Whether ``tokenizer`` writes most common words after a space as ONE token (`` the``): true of
    the BPE vocabularies of pretrained models, false of the sandbox's small corpus-trained one."""
    cached = getattr(tokenizer, "_sage_merges_spaces", None)
    if cached is None:
        base = len(tokenizer("}", add_special_tokens=False)["input_ids"])
        merged = sum(len(tokenizer("} " + w, add_special_tokens=False)["input_ids"]) == base + 1 for w in _PROBES)
        cached = merged > len(_PROBES) // 2
        with contextlib.suppress(AttributeError):  # some tokenizer objects refuse new attributes
            tokenizer._sage_merges_spaces = cached
    return bool(cached)


def drop_healed(text: str, spaces: str) -> str:
    """``text`` without the leading ``spaces`` :func:`heal_prefill` moved out of the prompt."""
    return text[len(spaces):] if spaces and text.startswith(spaces) else text


__all__ = ["drop_healed", "heal_prefill", "merges_spaces", "render_prompt"]

"""Named chat templates, the turn format of each architecture, and the check that a template's
special tokens are in the tokenizer.

A model without a chat template (a base model, a GGUF file that carries none) gets the turn format
of its architecture (:func:`template_for`, chosen by ``config.model_type`` and checked against the
vocabulary): Gemma's ``<start_of_turn>user ... <end_of_turn>`` (no system role: the system prompt
opens the first user turn, as Gemma's own template does), Llama 3's header tokens, Qwen2's ChatML,
Phi-3's ``<|user|> ... <|end|>``, Mistral's ``[INST]``. Where none fits, callers refuse and ask for
a template by name or file, rather than fall back to one whose markers the model does not have:
ChatML on Gemma taught ``<|im_end|>`` as a run of sub-word pieces and the chat answered ``2222...``.

Every template here wraps each assistant turn's content *and* its end-of-turn token in
``{% generation %}`` markers, so TRL's assistant-only loss covers what the model must learn to
write, stop included. The template used in training is saved with the model.
"""

from __future__ import annotations

import re
from typing import Any

CHATML = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{ '\\n' }}"
    "{%- else %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}"
)

# Mistral / Mixtral-Instruct style: [INST] user [/INST] reply</s>; a system message is put before the
# first user message (the official template refuses system messages).
MISTRAL = (
    "{{ bos_token }}"
    "{%- set ns = namespace(system='') %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'system' %}{%- set ns.system = message['content'] + '\\n\\n' %}"
    "{%- elif message['role'] == 'user' %}"
    "{{ '[INST] ' + ns.system + message['content'] + ' [/INST]' }}{%- set ns.system = '' %}"
    "{%- else %}"
    "{% generation %}{{ ' ' + message['content'] + eos_token }}{% endgeneration %}"
    "{%- endif %}"
    "{%- endfor %}"
)

# Gemma 2/3: user and model turns only; the system prompt opens the first user turn (followed by a
# blank line), as Gemma's own template does.
GEMMA = (
    "{{ bos_token }}"
    "{%- set ns = namespace(prefix='') %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'system' %}{%- set ns.prefix = ns.prefix + message['content'] + '\\n\\n' %}"
    "{%- elif message['role'] == 'assistant' %}"
    "{{ '<start_of_turn>model\\n' }}{% generation %}{{ message['content'] + '<end_of_turn>' }}{% endgeneration %}"
    "{{ '\\n' }}"
    "{%- else %}"
    "{{ '<start_of_turn>user\\n' + ns.prefix + message['content'] + '<end_of_turn>\\n' }}{%- set ns.prefix = '' %}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{%- endif %}"
)

LLAMA3 = (
    "{{ bos_token }}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% generation %}{{ message['content'] + '<|eot_id|>' }}{% endgeneration %}"
    "{%- else %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)

PHI3 = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{ '<|assistant|>\\n' }}{% generation %}{{ message['content'] + '<|end|>' }}{% endgeneration %}{{ '\\n' }}"
    "{%- else %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|assistant|>\\n' }}{%- endif %}"
)

TEMPLATES: dict[str, str] = {"chatml": CHATML, "mistral": MISTRAL, "gemma": GEMMA, "llama3": LLAMA3, "phi3": PHI3}

# tokens each named template needs as single vocabulary entries (Mistral's [INST] is plain text)
REQUIRED: dict[str, tuple[str, ...]] = {
    "chatml": ("<|im_start|>", "<|im_end|>"),
    "mistral": (),
    "gemma": ("<start_of_turn>", "<end_of_turn>"),
    "llama3": ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
    "phi3": ("<|user|>", "<|assistant|>", "<|end|>"),
}

# config.model_type (prefix) -> the templates its checkpoints use, tried in order against the vocabulary
ARCHITECTURES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("gemma", ("gemma",)),
    ("qwen", ("chatml",)),
    ("phi3", ("phi3",)),
    ("phi", ("chatml",)),
    ("mistral", ("mistral",)),
    ("mixtral", ("mistral",)),
    ("llama", ("llama3", "chatml", "mistral")),
)

END_OF_TURN = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|end|>")

# literal special-token-like markers in a template: <|...|> and Gemma's <start_of_turn>/<end_of_turn>
_MARKER_RE = re.compile(r"<\|[A-Za-z0-9_]+\|>|<(?:start|end)_of_turn>")


def required_tokens(template: str) -> list[str]:
    """The special tokens ``template`` writes: a named template's list plus every literal marker."""
    found = list(dict.fromkeys(_MARKER_RE.findall(template)))
    for name, tpl in TEMPLATES.items():
        if tpl == template:
            found += [t for t in REQUIRED[name] if t not in found]
    return found


def missing_tokens(template: str, tokenizer: Any) -> list[str]:
    """The special tokens ``template`` writes that are not single entries of ``tokenizer``'s vocabulary.

    Training on such a template would teach the model a marker it can only spell in pieces, and it
    would never stop at the end of a turn.
    """
    vocab = tokenizer.get_vocab()
    return [t for t in required_tokens(template) if t not in vocab]


def end_of_turn(template: str) -> str | None:
    """The token that ends an assistant turn in ``template`` (None: it uses ``eos_token``)."""
    return next((t for t in END_OF_TURN if t in template), None)


def template_for(model_type: str | None, tokenizer: Any) -> tuple[str, str] | None:
    """``(name, template)``: the turn format of architecture ``model_type`` whose tokens the
    tokenizer has, or None when the architecture is unknown or none fits."""
    if not model_type:
        return None
    mt = model_type.lower()
    for prefix, names in ARCHITECTURES:
        if mt.startswith(prefix):
            for name in names:
                if not missing_tokens(TEMPLATES[name], tokenizer):
                    return name, TEMPLATES[name]
            return None
    return None


__all__ = ["ARCHITECTURES", "CHATML", "GEMMA", "LLAMA3", "MISTRAL", "PHI3", "REQUIRED", "TEMPLATES",
           "end_of_turn", "missing_tokens", "required_tokens", "template_for"]

"""Build tiny causal LMs locally: a byte-level BPE tokenizer trained on given text and a small Llama.

Nothing is downloaded. The tokenizer gets a ChatML-like chat template whose assistant content,
end-of-turn token included, is wrapped in ``{% generation %}`` markers so TRL's assistant-only loss
works. Used by the tests (once per run), the sandbox world and the benchmarks.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from pathlib import Path

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}"
    "{%- else %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}"
)
SPECIAL_TOKENS = ["<|pad|>", "<|im_start|>", "<|im_end|>", "<|unk|>"]

_WORDS = (
    "i you we they it feel felt think know want need hope worry wonder failed passed lost found "
    "exam job interview friend family mother father sister brother dog cat house city trip movie "
    "music game book school work boss team project deadline weekend holiday birthday dinner coffee "
    "happy sad angry anxious calm tired excited lonely proud nervous grateful curious playful "
    "gentle really very quite a bit so too again today yesterday tomorrow always never sometimes "
    "maybe comfort joke advice question reassurance empathy praise suggestion share listen venting "
    "news what why how when where who that's sounds great rough hard fun okay sure thanks sorry "
    "hello u_motivation u_emotion u_topic a_motivation a_emotion a_topic motivation emotion topic "
    "null "
).split()


def default_corpus(n_lines: int = 600, seed: int = 0) -> list[str]:
    """Varied synthetic lines (plain sentences and SAC-style tag blocks) for a tokenizer to learn."""
    rng = random.Random(seed)
    lines = []
    for i in range(n_lines):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 16))]
        if i % 3 == 0:
            w = rng.sample(_WORDS, 5)
            lines.append(
                f"{{u_motivation: {w[0]}, u_emotion: {w[1]}, u_topic: [{w[2]}]}} "
                f"{{a_motivation: {w[3]}, a_emotion: {w[4]}, a_topic: []}} " + " ".join(words) + "?"
            )
        else:
            lines.append(" ".join(words).capitalize() + rng.choice([".", "!", "?", "..."]))
    return lines


def build_tokenizer(texts: Iterable[str], vocab_size: int = 2000, *,
                    space_style: str = "prefix"):  # -> PreTrainedTokenizerFast
    """Train a byte-level BPE tokenizer on ``texts`` and wrap it with the chat template.

    ``space_style="prefix"`` (default) is GPT-2 style: a space starts the next word (`` word``).
    ``"suffix"`` keeps each space with the word before it (``word ``), so text that ends in a space
    (a steering prefill such as ``{a_motivation: comfort, `` or ``...]} ``) ends on the same token
    boundary as in training; a small model trained from scratch is very sensitive to that.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<|unk|>"))
    if space_style == "suffix":
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(r"\S+\s*|\s+"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    elif space_style == "prefix":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        raise ValueError(f"space_style={space_style!r}: use 'prefix' or 'suffix'")
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<|pad|>",
        eos_token="<|im_end|>",
        bos_token="<|im_start|>",
        unk_token="<|unk|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "left"
    return fast


def build_tiny_model(
    out_dir: str | Path,
    texts: Iterable[str] | None = None,
    *,
    vocab_size: int = 2000,
    hidden_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 4,
    max_positions: int = 1024,
    seed: int = 0,
    intermediate_size: int | None = None,
    space_style: str = "prefix",
) -> Path:
    """Create a randomly initialised small Llama with its tokenizer in ``out_dir``; return the path.

    ``intermediate_size`` defaults to ``3 * hidden_size``; ``space_style`` goes to :func:`build_tokenizer`.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    tokenizer = build_tokenizer(texts if texts is not None else default_corpus(), vocab_size,
                                space_style=space_style)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or hidden_size * 3,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_positions,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out

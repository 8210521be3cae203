"""Loss masks on SmolLM2's real tokenizer and its own ChatML template (no ``{% generation %}`` markers):
position by position, the reply/tags masks cover exactly the assistant tag blocks and replies (with
the end-of-turn token), and tag dropout removes exactly the dropped turns' tag tokens."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from sage_dialog.core import sac
from sage_dialog.core.schema import Tags
from sage_dialog.train.data import IGNORE, build_sft_dataset, drop_tags, encode_conversation
from sage_dialog.train.templates import has_generation_markers

REPLIES = ["That sounds rough, what happened?", "Sure. Want to go over the hard parts?"]
TAGGED = [
    sac.render_turn(REPLIES[0], state=Tags(motivation="venting", emotion="sad", topics=["exam"]),
                    action=Tags(motivation="comfort", emotion="gentle", topics=[])),
    sac.render_turn(REPLIES[1], state=Tags(motivation="asking for help", emotion=None, topics=["exam", "study"]),
                    action=Tags(motivation="offer help", emotion="calm", topics=["study"])),
]
CONV = [
    {"role": "user", "content": "I failed my exam."},
    {"role": "assistant", "content": TAGGED[0]},
    {"role": "user", "content": "The maths part. Can you help?"},
    {"role": "assistant", "content": TAGGED[1]},
]


@pytest.fixture(scope="module")
def tok(smollm2: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2)


def expected_parts(tok, text: str, offsets, contents: list[str]) -> list[str | None]:
    """What each token should be, from plain string search (independent of train.data):
    ``tags`` inside an assistant turn's leading blocks, ``reply`` in the rest of the turn up to and
    including <|im_end|>, None elsewhere (system, user turns, <|im_start|>assistant\\n, newlines)."""
    regions: list[tuple[int, int, int]] = []  # (turn start, tags end, turn end)
    pos = 0
    for c in contents:
        head = "<|im_start|>assistant\n"
        start = text.index(head + c + "<|im_end|>", pos) + len(head)
        end = start + len(c) + len("<|im_end|>")
        reply = sac.parse(c).reply
        tags_end = start + len(c) - len(reply) - (1 if reply and c != reply else 0)  # the space before the reply
        regions.append((start, tags_end if c != reply else start, end))
        pos = end
    out: list[str | None] = []
    for a, b in offsets:
        part = None
        for s, t, e in regions:
            if a < e and b > s:
                part = "tags" if a < t and b > s and t > s else "reply"
        out.append(part)
    return out


def test_smollm2_template_has_no_generation_markers(tok) -> None:
    assert tok.chat_template and not has_generation_markers(tok.chat_template)
    assert "<|im_start|>" in tok.chat_template


def test_masks_position_by_position(tok) -> None:
    template = tok.chat_template
    enc = encode_conversation(tok, CONV, template, loss_on="turn")
    offsets = tok(enc.text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    want = expected_parts(tok, enc.text, offsets, TAGGED)
    assert enc.parts == want
    # the SmolLM2 template adds its default system prompt: it is never trained
    assert enc.text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")

    def decoded(encoding, part: str) -> list[str]:
        runs, cur = [], []
        for i, p in zip(encoding.input_ids, encoding.parts, strict=True):
            if p == part:
                cur.append(i)
            elif cur:
                runs.append(tok.decode(cur))
                cur = []
        if cur:
            runs.append(tok.decode(cur))
        return runs

    # token boundaries fall where the blocks end: tags decode to exactly the blocks, replies to the reply
    assert decoded(enc, "tags") == [c[: len(c) - len(r) - 1] for c, r in zip(TAGGED, REPLIES, strict=True)]
    assert decoded(enc, "reply") == [f" {r}<|im_end|>" for r in REPLIES]
    for loss_on, parts in (("turn", {"tags", "reply"}), ("reply", {"reply"}), ("tags", {"tags"})):
        e = encode_conversation(tok, CONV, template, loss_on=loss_on)  # type: ignore[arg-type]
        assert e.input_ids == enc.input_ids
        for t, lab, p in zip(e.input_ids, e.labels, e.parts, strict=True):
            assert lab == (t if p in parts else IGNORE)


def test_tag_dropout_on_the_real_template(tok) -> None:
    template = tok.chat_template
    rng = random.Random(3)
    seen = set()
    for _ in range(20):
        dropped = drop_tags(CONV, 0.5, rng)
        enc = encode_conversation(tok, dropped, template, loss_on="turn")
        kept = [m["content"] for m in dropped if m["role"] == "assistant"]
        offsets = tok(enc.text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        assert enc.parts == expected_parts(tok, enc.text, offsets, kept)
        n_tagged = sum(sac.parse(c).has_tags for c in kept)
        runs = sum(1 for i, p in enumerate(enc.parts) if p == "tags" and (i == 0 or enc.parts[i - 1] != "tags"))
        assert runs == n_tagged
        # a dropped turn is trained on its reply alone, never on tag text
        for c, r in zip(kept, REPLIES, strict=True):
            assert sac.parse(c).reply == r
        seen.add(n_tagged)
    assert seen == {0, 1, 2}  # p=0.5 drops none, one or both turns' tags over 20 draws
    ds = build_sft_dataset(tok, [CONV] * 4, template, loss_on="turn", tag_dropout=1.0, seed=0)
    for row in ds:
        trained = tok.decode([t for t in row["labels"] if t != IGNORE])
        assert "{u_motivation" not in trained and "a_motivation" not in trained
        assert trained == "".join(f"{r}<|im_end|>" for r in REPLIES)


def test_steering_prefill_space_is_healed_on_smollm2(tok) -> None:
    """SmolLM2's BPE puts a word's space in the word's token: a complete steering prefill ("... } ")
    is rendered without its trailing space (the model writes it), else replies began with digits."""
    from sage_dialog.backends.prompting import heal_prefill

    prefill = sac.steering_prefill(Tags(motivation="asking", emotion="curious", topics=[]))
    assert prefill.endswith("} ")
    assert heal_prefill(prefill, tok) == (prefill[:-1], " ")

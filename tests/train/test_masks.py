"""Loss masks, token by token, on the tiny model's tokenizer (assistant turns only; tags vs reply)."""

from __future__ import annotations

import random

import pytest
from transformers import AutoTokenizer

from sage_dialog.core import sac
from sage_dialog.core.errors import UserError
from sage_dialog.core.schema import Dialog, PreferencePair, Tags, Turn
from sage_dialog.train.data import (
    IGNORE,
    build_sft_dataset,
    drop_tags,
    encode_conversation,
    load_preferences,
    load_sft_messages,
    split_eval,
)
from sage_dialog.train.templates import CHATML, MISTRAL

TAGGED = sac.render_turn(
    "That sounds rough.",
    state=Tags(motivation="venting", emotion="sad", topics=["exam"]),
    action=Tags(motivation="comfort", emotion="gentle", topics=[]),
)
CONV = [
    {"role": "system", "content": "be kind"},
    {"role": "user", "content": "I failed my exam."},
    {"role": "assistant", "content": TAGGED},
    {"role": "user", "content": "yes"},
    {"role": "assistant", "content": "Want to talk?"},
]


@pytest.fixture(scope="module")
def tok(tiny_model):
    return AutoTokenizer.from_pretrained(tiny_model)


def _trained_text(tok, enc) -> str:
    return "".join(tok.decode([i]) for i, lab in zip(enc.input_ids, enc.labels, strict=False) if lab != IGNORE)


def _segments(tok, enc, want: set[str | None]) -> list[str]:
    """Maximal runs of consecutive tokens whose part is in ``want``, decoded."""
    runs, cur = [], []
    for i, p in zip(enc.input_ids, enc.parts, strict=False):
        if p in want:
            cur.append(i)
        elif cur:
            runs.append(tok.decode(cur))
            cur = []
    if cur:
        runs.append(tok.decode(cur))
    return runs


def test_whole_turn_loss_covers_tags_reply_and_end_of_turn_only(tok):
    enc = encode_conversation(tok, CONV, CHATML, loss_on="turn")
    assert len(enc.input_ids) == len(enc.labels) == len(enc.parts)
    # every position: label is the token itself exactly where the part is an assistant part
    for i, lab, part in zip(enc.input_ids, enc.labels, enc.parts, strict=False):
        assert (lab == i) if part in ("tags", "reply") else (lab == IGNORE)
    assert _segments(tok, enc, {"tags", "reply"}) == [TAGGED + "<|im_end|>", "Want to talk?<|im_end|>"]
    # nothing of the system/user turns or the role headers is trained
    trained = _trained_text(tok, enc)
    assert "failed" not in trained and "be kind" not in trained and "assistant\n" not in trained
    assert not enc.parts[-1]  # the newline after the last end-of-turn token is not trained


def test_reply_only_masks_the_tag_blocks(tok):
    enc = encode_conversation(tok, CONV, CHATML, loss_on="reply")
    assert _segments(tok, enc, {"tags"}) == [TAGGED[: TAGGED.index("} That") + 1]]
    assert _trained_text(tok, enc) == " That sounds rough.<|im_end|>Want to talk?<|im_end|>"
    for lab, part in zip(enc.labels, enc.parts, strict=False):
        assert (lab != IGNORE) == (part == "reply")


def test_tags_only_trains_exactly_the_tag_tokens(tok):
    enc = encode_conversation(tok, CONV, CHATML, loss_on="tags")
    assert _trained_text(tok, enc) == TAGGED[: TAGGED.index("} That") + 1]
    tag_positions = [k for k, p in enumerate(enc.parts) if p == "tags"]
    trained_positions = [k for k, lab in enumerate(enc.labels) if lab != IGNORE]
    assert trained_positions == tag_positions and len(tag_positions) > 10
    # the tag tokens are contiguous and start right after the assistant header
    assert tag_positions == list(range(tag_positions[0], tag_positions[-1] + 1))
    assert tok.decode(enc.input_ids[tag_positions[0] - 1]) == "\n"


def test_template_without_generation_markers_gives_the_same_mask(tok):
    plain = CHATML.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    a = encode_conversation(tok, CONV, CHATML, loss_on="reply")
    b = encode_conversation(tok, CONV, plain, loss_on="reply")
    assert a.input_ids == b.input_ids and a.labels == b.labels


def test_mistral_template_masks_instructions(tok):
    enc = encode_conversation(tok, CONV, MISTRAL, loss_on="turn")
    trained = _trained_text(tok, enc)
    assert trained.strip().startswith("{u_motivation: venting")
    assert "[INST]" not in trained and "failed" not in trained
    assert trained.count("<|im_end|>") == 2  # the eos_token ends each assistant turn


def test_tag_dropout_is_seeded_and_only_strips_tags():
    convs = [CONV] * 200
    rng = random.Random(0)
    dropped = [drop_tags(c, 0.3, rng) for c in convs]
    tagless = sum(d[2]["content"] == "That sounds rough." for d in dropped)
    assert 40 < tagless < 80  # ~30% of 200
    assert all(d[2]["content"] in (TAGGED, "That sounds rough.") for d in dropped)
    assert all(d[4] == CONV[4] and d[1] == CONV[1] for d in dropped)
    again = [drop_tags(c, 0.3, random.Random(0)) for c in convs[:1]]
    assert again[0] == dropped[0]
    assert drop_tags(CONV, 0.0, rng) is CONV


def test_dataset_labels_and_empty_mask_error(tok):
    ds = build_sft_dataset(tok, [CONV, CONV[:3]], CHATML, loss_on="turn")
    assert ds.column_names == ["input_ids", "labels"] and len(ds) == 2
    with pytest.raises(UserError, match="no training tokens"):
        build_sft_dataset(tok, [[{"role": "user", "content": "x"}, {"role": "assistant", "content": "plain"}]],
                          CHATML, loss_on="tags")


def test_dialog_and_pair_records_are_converted(tmp_path):
    d = Dialog(id="d1", turns=[
        Turn(role="user", text="I failed my exam."),
        Turn(role="assistant", text="That sounds rough.",
             state=Tags(motivation="venting", emotion="sad", topics=["exam"]),
             action=Tags(motivation="comfort", emotion="gentle", topics=[])),
    ])
    p = tmp_path / "d.jsonl"
    p.write_text(d.model_dump_json() + "\n")
    assert load_sft_messages(p) == [[CONV[1], {"role": "assistant", "content": TAGGED}]]
    pair = PreferencePair(id="p1", history=d.turns[:1], chosen=d.turns[1],
                          rejected=Turn(role="assistant", text="Haha."))
    q = tmp_path / "p.jsonl"
    q.write_text(pair.model_dump_json() + "\n")
    rec = load_preferences(q)[0]
    assert rec["prompt"] == [CONV[1]] and rec["chosen"][0]["content"] == TAGGED
    assert rec["rejected"] == [{"role": "assistant", "content": "Haha."}]


@pytest.mark.parametrize(("line", "msg"), [
    ('{"messages": [{"role": "bot", "content": "x"}]}', r"record 1: field messages\[0\].role"),
    ('{"messages": [{"role": "user", "content": "x"}]}', "no assistant turn"),
    ('{"text": "x"}', "expected a 'messages' list"),
    ('{"turns": [{"role": "user"}]}', r"record 1: field turns\[0\].text"),
])
def test_bad_sft_records_name_file_record_field(tmp_path, line, msg):
    p = tmp_path / "bad.jsonl"
    p.write_text(line + "\n")
    with pytest.raises(UserError, match=msg):
        load_sft_messages(p)


def test_bad_preference_records(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"prompt": [{"role": "user", "content": "x"}], "chosen": [{"role": "user", "content": "y"}], '
                 '"rejected": "z"}\n')
    with pytest.raises(UserError, match="record 1: field chosen: expected exactly one assistant message"):
        load_preferences(p)


def test_split_eval_is_reproducible_and_never_empty():
    recs = list(range(10))
    tr, ev = split_eval(recs, 0.2, seed=3)
    assert len(ev) == 2 and sorted(tr + ev) == recs
    assert split_eval(recs, 0.2, seed=3) == (tr, ev)
    assert split_eval([1], 0.5, 0) == ([1], [])
    assert len(split_eval([1, 2], 0.01, 0)[1]) == 1


def test_template_choice_model_own_named_or_chatml_fallback(tiny_model, tmp_path):
    import shutil

    from sage_dialog.train.common import load_tokenizer
    from sage_dialog.train.config import ModelSection

    tok, tmpl = load_tokenizer(ModelSection(name_or_path=str(tiny_model)))
    assert tmpl == tok.chat_template and "generation" in tmpl  # the model's own
    tok, tmpl = load_tokenizer(ModelSection(name_or_path=str(tiny_model), chat_template="mistral"))
    assert tmpl == MISTRAL and tok.chat_template == MISTRAL
    bare = tmp_path / "bare"
    shutil.copytree(tiny_model, bare)
    (bare / "chat_template.jinja").unlink()
    tok, tmpl = load_tokenizer(ModelSection(name_or_path=str(bare)))
    assert tmpl == CHATML
    with pytest.raises(UserError, match="unknown template 'nope'"):
        load_tokenizer(ModelSection(name_or_path=str(tiny_model), chat_template="nope"))


def test_chatml_end_of_turn_becomes_the_eos(tiny_model):
    from transformers import AutoModelForCausalLM

    from sage_dialog.train.common import align_eos

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    tok.eos_token = "<|unk|>"
    model.generation_config.eos_token_id = tok.convert_tokens_to_ids("<|unk|>")
    align_eos(tok, model, CHATML)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.eos_token == "<|im_end|>"
    assert model.generation_config.eos_token_id == [im_end, tok.convert_tokens_to_ids("<|unk|>")]
    align_eos(tok, model, MISTRAL)  # no chatml marker in the template: nothing changes
    assert tok.eos_token == "<|im_end|>"


def test_full_tag_dropout_leaves_no_tag_tokens(tok):
    ds = build_sft_dataset(tok, [CONV] * 3, CHATML, loss_on="turn", tag_dropout=1.0)
    text = tok.decode(ds[0]["input_ids"])
    assert "u_motivation" not in text and "That sounds rough." in text
    trained = tok.decode([t for t in ds[0]["labels"] if t != IGNORE])
    assert trained == "That sounds rough.<|im_end|>Want to talk?<|im_end|>"

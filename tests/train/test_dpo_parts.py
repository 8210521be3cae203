"""DPO with ``data.loss_on``: the completion mask keeps only the tag blocks (or only the reply)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from sage_dialog.core import sac
from sage_dialog.core.config import load_config
from sage_dialog.core.errors import UserError
from sage_dialog.core.schema import Tags
from sage_dialog.train.config import DPORunConfig
from sage_dialog.train.data import completion_loss_mask
from sage_dialog.train.dpo import part_collator, train_dpo

STATE = Tags(motivation="venting", emotion="sad", topics=["exam"])


def _turn(motivation: str, reply: str) -> str:
    return sac.render_turn(reply, state=STATE, action=Tags(motivation=motivation, emotion="calm", topics=["exam"]))


def _example(tok, chosen: str, rejected: str) -> dict:
    prompt = tok.apply_chat_template([{"role": "user", "content": "I failed my exam."}], add_generation_prompt=True,
                                     tokenize=False)
    ids = lambda t: tok(t, add_special_tokens=False)["input_ids"]  # noqa: E731
    return {"prompt_ids": ids(prompt), "chosen_ids": ids(chosen + "<|im_end|>"),
            "rejected_ids": ids(rejected + "<|im_end|>")}


def _masked(tok, batch, row) -> str:
    ids = batch["input_ids"][row][batch["completion_mask"][row].bool()]
    return tok.decode(ids.tolist(), skip_special_tokens=False)


def test_completion_mask_parts(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    chosen, rejected = _turn("comfort", "That sounds hard."), _turn("advice", "Study more next time!")
    ex = _example(tok, chosen, rejected)
    head = lambda t: t[: len(t) - len(sac.parse(t).reply)].rstrip()  # noqa: E731
    mask = completion_loss_mask(tok, ex["chosen_ids"], "tags")
    assert 0 < sum(mask) < len(mask) and mask == sorted(mask, reverse=True)  # a leading run of tag tokens
    args = type("A", (), {"max_length": 512, "truncation_mode": "keep_start", "pad_to_multiple_of": None})()
    tags = part_collator(tok, args, "tags").torch_call([ex])
    assert _masked(tok, tags, 0).strip() == head(chosen) and _masked(tok, tags, 1).strip() == head(rejected)
    reply = part_collator(tok, args, "reply").torch_call([ex])
    assert _masked(tok, reply, 0).strip() == "That sounds hard.<|im_end|>"
    # the two parts split the completion: together they are TRL's own mask
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    full = DataCollatorForPreference(pad_token_id=tok.pad_token_id).torch_call([ex])
    assert torch.equal(tags["completion_mask"] + reply["completion_mask"], full["completion_mask"])


def test_tags_loss_ignores_the_replies(tiny_model):
    """Under loss_on tags the masked log-likelihood (what DPO and its SFT term sum) does not depend on
    the replies; under the whole turn it does."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    args = type("A", (), {"max_length": 512, "truncation_mode": "keep_start", "pad_to_multiple_of": None})()
    a = _example(tok, _turn("comfort", "That sounds hard."), _turn("advice", "Study more."))
    b = _example(tok, _turn("comfort", "Oh no, sorry to hear it, friend."), _turn("advice", "Try again soon!"))

    def logps(loss_on: str) -> list[float]:
        col = part_collator(tok, args, loss_on) if loss_on != "turn" else None
        from trl.trainer.dpo_trainer import DataCollatorForPreference

        col = col or DataCollatorForPreference(pad_token_id=tok.pad_token_id)
        batch = col.torch_call([a, b])
        with torch.no_grad():
            lp = torch.log_softmax(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, -1)
        tgt = batch["input_ids"][:, 1:]
        per = torch.gather(lp[:, :-1], 2, tgt.unsqueeze(2)).squeeze(2) * batch["completion_mask"][:, 1:]
        return per.sum(1).tolist()  # rows: chosen a, chosen b, rejected a, rejected b

    t = logps("tags")
    assert math.isclose(t[0], t[1], rel_tol=1e-5) and math.isclose(t[2], t[3], rel_tol=1e-5)
    w = logps("turn")
    assert not math.isclose(w[0], w[1], rel_tol=1e-3)


def test_dpo_trains_on_tags_alone(tiny_model, tmp_path, fast, toy):
    rows = toy.preferences()
    data = toy.write_jsonl(tmp_path / "p.jsonl", rows)
    out = tmp_path / "dpo-tags"
    train_dpo(load_config(DPORunConfig, None, fast(tiny_model, data, out, **{
        "train.max_steps": 4, "train.learning_rate": 5e-3, "data.loss_on": "tags"})))
    s = json.loads((out / "training_summary.json").read_text())
    assert s["steps"] == 4 and math.isfinite(s["final_train_loss"])
    # no tags anywhere: nothing to train on, said before any training
    plain = toy.write_jsonl(tmp_path / "plain.jsonl", [
        {**r, "chosen": [{"role": "assistant", "content": sac.strip(r["chosen"][0]["content"])}]} for r in rows])
    with pytest.raises(UserError, match="no chosen reply has tag blocks"):
        train_dpo(load_config(DPORunConfig, None, fast(tiny_model, plain, tmp_path / "x", **{"data.loss_on": "tags"})))

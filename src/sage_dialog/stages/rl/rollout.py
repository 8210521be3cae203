"""Whole dialogs played by the live policy against the user simulator, as one token sequence each.

A dialog is kept as TRL's multi-turn ``rollout_func`` wants it: ``prompt_ids`` (the opening, rendered
with the chat template and the generation prompt), then ``completion_ids``: the policy's sampled
reply tokens, the user's turn (rendered by the same template), the next reply, and so on. ``env_mask``
is 1 on the reply tokens that carry the loss (``loss_on``) and 0 on the user's tokens, so the policy
is never trained on what the simulator said. The sampled ids are kept as generated (never re-encoded
from text), so the loss is computed on exactly the tokens that were sampled.

All dialogs of a step are in flight at once: each turn is one batched ``generate`` of the policy and
one call of the user simulator for every dialog.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sage_dialog.core import sac
from sage_dialog.core.schema import Tags, Turn
from sage_dialog.roles.protocols import UserSimulator

LossOn = Literal["action", "action+reply", "turn"]
_SENTINEL = "\u2063SAGE-TURN-END\u2063"


@dataclass
class Rollout:
    """One dialog: its turns, its token sequence and where each assistant turn sits in it."""

    seed_id: int
    opening: str
    turns: list[Turn] = field(default_factory=list)
    prompt_ids: list[int] = field(default_factory=list)
    completion_ids: list[int] = field(default_factory=list)
    env_mask: list[int] = field(default_factory=list)
    turn_spans: list[tuple[int, int]] = field(default_factory=list)  # [start, end) in completion_ids
    state_keys: list[str] = field(default_factory=list)
    user_turns: int = 0  # user-simulator calls this dialog cost (environment interactions)

    @property
    def assistant_turns(self) -> list[Turn]:
        return [t for t in self.turns if t.role == "assistant"]


def block_spans(text: str) -> dict[str, tuple[int, int]]:
    """Character spans of the leading tag blocks of a turn, by kind (``state``, ``action``, ``plain``)."""
    parsed = sac.parse(text)
    spans: dict[str, tuple[int, int]] = {}
    for (kind, _tags), span in zip(parsed.blocks, parsed.spans, strict=True):
        spans.setdefault(kind, span)
    return spans


def loss_mask(tokenizer: Any, ids: Sequence[int], loss_on: LossOn) -> list[int]:
    """1 for the tokens of one generated reply that carry the loss under ``loss_on``."""
    if loss_on == "turn" or not ids:
        return [1] * len(ids)
    ends = [len(tokenizer.decode(list(ids[: j + 1]), skip_special_tokens=True)) for j in range(len(ids))]
    text = tokenizer.decode(list(ids), skip_special_tokens=True)
    spans = block_spans(text)
    if "action" in spans:
        lo, hi = spans["action"] if loss_on == "action" else (spans["action"][0], len(text) + 1)
    elif loss_on == "action":
        return [0] * len(ids)  # no action block written: nothing at the state level to train
    else:
        lo, hi = (spans["state"][1] if "state" in spans else 0), len(text) + 1
    out = []
    start = 0
    for j, end in enumerate(ends):
        special = end == start and j > 0  # a special token (end of turn) decodes to nothing
        keep = (start < hi and end > lo) or (special and hi > len(text))
        out.append(1 if keep else 0)
        start = end
    return out


def state_key(turn_text: str, last_user: str, turn_index: int, mode: str = "state",
              last_action: Tags | None = None) -> str:
    """The state a reply answered, as the policy read it (its ``u_*`` block); without one, the user's words.
    ``mode``: ``state`` alone, ``state+turn`` (and the turn's index), ``state+last_action`` (and the
    policy's previous action, whose effect may still be pending when the user's state does not show it)."""
    parsed = sac.parse(turn_text)
    s: Tags | None = parsed.state
    key = f"{s.motivation}|{s.emotion}" if s is not None else "text:" + " ".join(last_user.lower().split())
    if mode == "state+turn":
        return f"{key}@{turn_index}"
    if mode == "state+last_action":
        prev = f"{last_action.motivation}|{last_action.emotion}" if last_action is not None else "-"
        return f"{key}<{prev}"
    return key


class PolicyPlayer:
    """Plays dialogs with a live (training) model: batched sampling, exact token bookkeeping."""

    def __init__(self, tokenizer: Any, *, turns: int, temperature: float, top_k: int, max_tokens: int,
                 loss_on: LossOn, key_mode: str = "state+turn", system_prompt: str | None = None):
        self.tok = tokenizer
        self.turns = turns
        self.temperature = temperature
        self.top_k = top_k
        self.max_tokens = max_tokens
        self.loss_on: LossOn = loss_on
        self.key_mode = key_mode  # how turns are keyed for state credit (see state_key)
        self.system = [{"role": "system", "content": system_prompt}] if system_prompt else []
        self.eos_ids = self._eos_ids()
        self.eos_text = tokenizer.eos_token or ""

    def _eos_ids(self) -> list[int]:
        ids = {self.tok.eos_token_id} if self.tok.eos_token_id is not None else set()
        marker = self.tok.get_vocab().get("<|im_end|>")
        if marker is not None:
            ids.add(marker)
        return sorted(ids)

    def _render(self, messages: list[dict[str, str]]) -> list[int]:
        text = self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return list(self.tok(text, add_special_tokens=False)["input_ids"])

    def _user_segment(self, messages: list[dict[str, str]], user_text: str, ended: bool) -> list[int]:
        """Tokens between the end of a reply and the next reply: the template's turn markers and the user's text."""
        shown = [*messages[:-1], {"role": "assistant", "content": _SENTINEL}, {"role": "user", "content": user_text}]
        text = self.tok.apply_chat_template(shown, tokenize=False, add_generation_prompt=True)
        tail = text[text.rindex(_SENTINEL) + len(_SENTINEL):]
        if ended and self.eos_text and tail.startswith(self.eos_text):
            tail = tail[len(self.eos_text):]  # the sampled reply already ends with the end-of-turn token
        return list(self.tok(tail, add_special_tokens=False)["input_ids"])

    def generate(self, model: Any, sequences: list[list[int]], seed: int) -> list[list[int]]:
        """One sampled reply per sequence (left-padded batch), cut after its end-of-turn token."""
        import torch

        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.eos_ids[0]
        width = max(len(s) for s in sequences)
        ids = torch.tensor([[pad] * (width - len(s)) + s for s in sequences])
        att = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in sequences])
        device = next(model.parameters()).device
        torch.manual_seed(seed)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                out = model.generate(input_ids=ids.to(device), attention_mask=att.to(device), do_sample=True,
                                     temperature=self.temperature, top_k=self.top_k or None, top_p=1.0,
                                     max_new_tokens=self.max_tokens, eos_token_id=self.eos_ids, pad_token_id=pad)
        finally:
            model.train(was_training)
        replies = []
        for row in out[:, width:].tolist():
            cut = next((j + 1 for j, t in enumerate(row) if t in self.eos_ids), len(row))
            replies.append(row[:cut])
        return replies

    def play(self, model: Any, openings: Sequence[tuple[int, str]], user: UserSimulator, seed: int) -> list[Rollout]:
        """Play one dialog from each ``(seed_id, opening)``: ``turns`` replies, the user answering between them."""
        rollouts = [Rollout(seed_id=sid, opening=text, turns=[Turn(role="user", text=text)]) for sid, text in openings]
        messages = [[*self.system, {"role": "user", "content": text}] for _, text in openings]
        for r, msgs in zip(rollouts, messages, strict=True):
            r.prompt_ids = self._render(msgs)
        rng = random.Random(seed)
        for k in range(self.turns):
            seqs = [r.prompt_ids + r.completion_ids for r in rollouts]
            replies = self.generate(model, seqs, rng.randrange(2**31))
            for r, msgs, ids in zip(rollouts, messages, replies, strict=True):
                text = self.tok.decode(ids, skip_special_tokens=True)
                start = len(r.completion_ids)
                r.completion_ids += ids
                r.env_mask += loss_mask(self.tok, ids, self.loss_on)
                r.turn_spans.append((start, len(r.completion_ids)))
                last_user = next(t.text for t in reversed(r.turns) if t.role == "user")
                last_action = next((t.action for t in reversed(r.turns) if t.role == "assistant"), None)
                r.state_keys.append(state_key(text, last_user, k, self.key_mode, last_action))
                parsed = sac.parse(text.strip())
                r.turns.append(Turn(role="assistant", text=parsed.reply.strip(), state=parsed.state,
                                    action=parsed.action))
                msgs.append({"role": "assistant", "content": text})
            if k == self.turns - 1:
                break
            said = asyncio.run(user.reply([r.turns for r in rollouts], [rng.randrange(2**31) for _ in rollouts]))
            for r, msgs, ids, text in zip(rollouts, messages, replies, said, strict=True):
                ended = bool(ids) and ids[-1] in self.eos_ids
                seg = self._user_segment(msgs, text, ended)
                r.completion_ids += seg
                r.env_mask += [0] * len(seg)
                r.turns.append(Turn(role="user", text=text))
                r.user_turns += 1
                msgs.append({"role": "user", "content": text})
        return rollouts

"""``json_prefill``: the answer starts with its JSON head, the model writes the rest (small models
otherwise go on with the dialog they were shown)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from sage_dialog.backends.base import Backend, ChatRequest, ChatResult, Completion
from sage_dialog.core.schema import Dialog, Tags, Turn
from sage_dialog.stages.annotate import JSON_PREFILL, LabelSets, LLMAnnotator

DIALOG = Dialog(id="d", turns=[Turn(role="user", text="hi there"), Turn(role="assistant", text="hello! how are you?")])
REST = ('greeting", "emotion": "happy", "topics": []}, '
        '{"index": 1, "motivation": "asking", "emotion": "curious", "topics": ["day"]}]}')


class Continues(Backend):
    provider = "continues"

    def __init__(self) -> None:
        super().__init__("x")
        self.prefills: list[str | None] = []

    async def generate(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        self.prefills += [r.prefill for r in requests]
        # with the head given the model writes the rest; without it, it chats on
        return [ChatResult([Completion(REST if r.prefill == JSON_PREFILL else "[2] user: fine thanks")])
                for r in requests]


def test_prefilled_answers_are_read_whole() -> None:
    be = Continues()
    ann = LLMAnnotator(be, labels=LabelSets(), json_prefill=True, max_attempts=1)
    (res,) = asyncio.run(ann.annotate([DIALOG]))
    assert res.error is None and res.tags is not None
    assert res.tags[0] == Tags(motivation="greeting", emotion="happy", topics=[])
    assert res.tags[1] == Tags(motivation="asking", emotion="curious", topics=["day"])
    assert res.raw == [JSON_PREFILL + REST] and be.prefills == [JSON_PREFILL]


def test_without_the_prefill_the_same_model_fails() -> None:
    be = Continues()
    (res,) = asyncio.run(LLMAnnotator(be, labels=LabelSets(), max_attempts=1).annotate([DIALOG]))
    assert res.tags is None and be.prefills == [None]

"""``json_prefill``: the answer starts with its JSON head, the model writes the rest (small models
otherwise go on with the dialog they were shown)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from sage_dialog.backends.base import Backend, ChatRequest, ChatResult, Completion
from sage_dialog.core.schema import Dialog, Tags, Turn
from sage_dialog.roles.annotator import JSON_PREFILL, LabelSets, LLMAnnotator

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


def test_score_mode_chooses_closed_labels_by_the_models_scores(tiny_model, tmp_path) -> None:
    """mode=score on a real (tiny) transformers model: every label comes from its set, by construction."""
    from sage_dialog.core.io import read_jsonl, write_jsonl
    from sage_dialog.labels import load_label_set
    from sage_dialog.stages import annotate

    src = tmp_path / "d.jsonl"
    write_jsonl(src, [DIALOG, DIALOG.model_copy(update={"id": "e"})])
    cfg = annotate.AnnotateConfig(input=src, output=tmp_path / "a.jsonl", annotator=f"hf:{tiny_model}", mode="score",
                                  labels={"motivation": "chitchat_motivations", "emotion": "chitchat_emotions"})
    annotate.run(annotate.Settings.of(cfg), inputs=cfg.inputs(), out=cfg.output)
    out = list(read_jsonl(tmp_path / "a.jsonl", Dialog))
    assert [d.id for d in out] == ["d", "e"]
    mot, emo = set(load_label_set("chitchat_motivations")), set(load_label_set("chitchat_emotions"))
    for d in out:
        for t in d.turns:
            tags = t.state if t.role == "user" else t.action
            assert tags is not None and tags.motivation in mot and tags.emotion in emo and tags.topics == []
    assert out[0].turns == out[1].turns  # the same dialog gets the same labels (greedy choice)


def test_score_mode_needs_closed_sets_before_any_model_loads(tmp_path) -> None:
    import pytest

    from sage_dialog.core.errors import UserError
    from sage_dialog.stages import annotate

    cfg = annotate.AnnotateConfig(input=tmp_path / "x", output=tmp_path / "a.jsonl", annotator="hf:/no/such/model",
                                  mode="score", labels={"motivation": "chitchat_motivations"})
    with pytest.raises(UserError, match=r"mode=score needs closed label sets for user\.emotion, assistant\.emotion"):
        annotate.build_annotator(annotate.Settings.of(cfg), cfg.inputs())

"""The oracle-free steering measure: the annotator labels the reply; followed = label equals the forced action."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from sage_dialog.core.schema import Dialog, Tags
from sage_dialog.roles.protocols import AnnotationResult
from sage_dialog.stages.steerability import AnnotatorJudge


class KeywordAnnotator:
    """Labels an assistant turn 'joking/playful' when it says 'haha', 'asking/curious' on a '?', else fails."""

    name = "keywords"

    def __init__(self) -> None:
        self.seen: list[Dialog] = []

    async def annotate(self, dialogs: Sequence[Dialog]) -> list[AnnotationResult]:
        self.seen += dialogs
        out = []
        for d in dialogs:
            text = d.turns[1].text
            if "haha" in text:
                tags = Tags(motivation="Joking", emotion="playful")
            elif text.endswith("?"):
                tags = Tags(motivation="asking", emotion="curious")
            else:
                out.append(AnnotationResult(tags=None, error="no label"))
                continue
            out.append(AnnotationResult(tags=[Tags(motivation="greeting"), tags]))
        return out


def test_followed_is_the_annotators_label_against_the_forced_fields() -> None:
    ann = KeywordAnnotator()
    judge = AnnotatorJudge(ann)
    joke = Tags(motivation="joking", emotion="playful")
    ask_only = Tags(motivation="asking")
    verdicts = asyncio.run(judge.judge_many([
        ("haha, you bet", joke),          # label equals the forced action (case folded)
        ("What did you do?", joke),       # labelled, but another action
        ("What did you do?", ask_only),   # only the forced field is compared
        ("ok.", joke),                    # the annotator could not label it: unjudged
    ]))
    assert verdicts == [True, False, True, None]
    assert judge.name == "annotator:keywords"
    assert [d.turns[1].role for d in ann.seen] == ["assistant"] * 4 and ann.seen[0].turns[1].text == "haha, you bet"

"""Constrained decoding on the in-process hf backend (xgrammar): a random tiny model, which
otherwise writes garbage, answers schema-valid compact JSON every time - in mixed batches, with n>1,
when streamed - and the schema is part of the cache key."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

pytest.importorskip("xgrammar")

from sage_dialog.backends import ChatRequest, SamplingParams, load_backend
from sage_dialog.backends.base import BackendConfig
from sage_dialog.core.errors import UserError

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "motivation": {"type": "string", "enum": ["venting", "asking", "sharing"]},
        "topics": {"type": "array", "items": {"enum": ["work", "school"]}, "maxItems": 3},
        "index": {"const": 2},
    },
    "required": ["motivation", "topics", "index"],
    "additionalProperties": False,
}
MSGS = [{"role": "user", "content": "Tag this: i failed my exam"}]


def valid(text: str) -> bool:
    """Parses and follows SCHEMA (checked by hand: no jsonschema dependency), compactly."""
    try:
        obj = json.loads(text)
    except ValueError:
        return False
    return (
        isinstance(obj, dict)
        and set(obj) == {"motivation", "topics", "index"}
        and obj["motivation"] in ("venting", "asking", "sharing")
        and isinstance(obj["topics"], list)
        and len(obj["topics"]) <= 3
        and all(t in ("work", "school") for t in obj["topics"])
        and obj["index"] == 2
        and text == json.dumps(obj, separators=(",", ":"))  # compact: no free whitespace
    )


@pytest.fixture(scope="module")
def hf(tiny_model):
    return load_backend(f"hf:{tiny_model}")


def test_schema_rows_are_valid_in_a_mixed_batch(hf) -> None:
    hot = SamplingParams(temperature=1.0, max_tokens=60)
    reqs = [
        ChatRequest(MSGS, n=6, sampling=hot, json_schema=SCHEMA),
        ChatRequest(MSGS, n=3, sampling=hot),  # no schema, same batch: left free
        ChatRequest(MSGS, n=1, sampling=SamplingParams(temperature=0.0, max_tokens=60), json_schema=SCHEMA),
        ChatRequest(MSGS, n=2, sampling=SamplingParams(temperature=1.5, top_k=50, max_tokens=60), json_schema=SCHEMA),
    ]
    before = hf._batcher.batches_run
    guided, free, greedy, hotter = asyncio.run(hf.generate(reqs))
    assert hf._batcher.batches_run - before == 1  # one batch for all of them
    for c in [*guided.completions, *greedy.completions, *hotter.completions]:
        assert valid(c.text) and c.finish_reason == "stop", c.text
    assert not any(valid(t) for t in free.texts)  # the random model's own text is not JSON
    assert len(set(guided.texts)) > 1  # still sampled, not forced to one answer


def test_budget_too_small_is_length_not_stop(hf) -> None:
    sp = SamplingParams(temperature=1.0, max_tokens=5)
    [r] = asyncio.run(hf.generate([ChatRequest(MSGS, n=2, sampling=sp, json_schema=SCHEMA)]))
    for c in r.completions:
        assert c.finish_reason == "length" and c.text.startswith('{"') and not valid(c.text)


def test_prefill_and_constrained_false_leave_decoding_free(hf, tiny_model) -> None:
    sp = SamplingParams(temperature=0.0, max_tokens=30)
    [pre] = asyncio.run(hf.generate([ChatRequest(MSGS, sampling=sp, json_schema=SCHEMA, prefill="x")]))
    [plain] = asyncio.run(hf.generate([ChatRequest(MSGS, sampling=sp, prefill="x")]))
    assert pre.texts == plain.texts  # a prefill starts mid-document: no constraint
    off = load_backend(f"hf:{tiny_model}", constrained=False)
    [a] = asyncio.run(off.generate([ChatRequest(MSGS, sampling=sp, json_schema=SCHEMA)]))
    [b] = asyncio.run(off.generate([ChatRequest(MSGS, sampling=sp)]))
    assert a.texts == b.texts and not valid(a.texts[0])


def test_streaming_is_constrained_too(hf) -> None:
    async def go() -> tuple[list[str], Any]:
        s = hf.stream(ChatRequest(MSGS, sampling=SamplingParams(temperature=1.0, max_tokens=60), json_schema=SCHEMA))
        async with s:
            pieces = [p async for p in s]
        return pieces, s.completion

    for _ in range(3):
        pieces, comp = asyncio.run(go())
        assert valid("".join(pieces)) and comp.finish_reason == "stop", pieces


def test_cache_key_includes_the_schema(tiny_model, tmp_path) -> None:
    b = load_backend(BackendConfig(spec=f"hf:{tiny_model}", cache=str(tmp_path / "c.sqlite")))
    sp = SamplingParams(temperature=0.0, max_tokens=60)
    other = {**SCHEMA, "properties": {**SCHEMA["properties"], "index": {"const": 3}}}
    [x] = asyncio.run(b.generate([ChatRequest(MSGS, sampling=sp, json_schema=SCHEMA)]))
    [y] = asyncio.run(b.generate([ChatRequest(MSGS, sampling=sp, json_schema=other)]))
    [z] = asyncio.run(b.generate([ChatRequest(MSGS, sampling=sp)]))
    assert valid(x.texts[0]) and json.loads(y.texts[0])["index"] == 3  # not served x from the cache
    assert not z.completions[0].cached and z.texts[0] != x.texts[0]
    [again] = asyncio.run(b.generate([ChatRequest(MSGS, sampling=sp, json_schema=SCHEMA)]))
    assert again.completions[0].cached and again.texts == x.texts


def test_a_schema_the_grammar_cannot_express_is_a_user_error(hf) -> None:
    bad = {"type": "object", "properties": {"a": {"$ref": "#/definitions/missing"}}, "required": ["a"]}
    with pytest.raises(UserError, match="json_schema"):
        asyncio.run(hf.generate([ChatRequest(MSGS, sampling=SamplingParams(max_tokens=5), json_schema=bad)]))


@pytest.mark.slow
def test_bounded_annotation_is_never_cut_off(hf) -> None:
    """A random model fills every open field to its bound: the annotator's token budget (the bounded
    schema's longest answer) still holds the whole answer, so no dialog is rejected as cut off."""
    from sage_dialog.core.schema import Dialog, Turn
    from sage_dialog.roles.annotator import (
        MAX_TOPICS,
        OPEN_LABEL_CHARS,
        LabelSets,
        LLMAnnotator,
        answer_token_bound,
        dialog_schema,
    )

    labels = LabelSets.from_spec({"assistant.motivation": "esconv_strategies", "user.emotion": "empathetic_emotions"})
    texts = ["I failed my exam.", "That's rough.", "It was maths.", "Want to go over it?", "Yes.", "Good."]
    dialogs = [Dialog(id=f"d{k}", turns=[Turn(role="user" if i % 2 == 0 else "assistant", text=t)
                                         for i, t in enumerate(texts[: 2 + 2 * k])]) for k in range(2)]
    ann = LLMAnnotator(hf, labels=labels, max_attempts=1, temperature=1.0, max_tokens_per_turn=8)
    req = ann._request(dialogs[1], ann.messages(dialogs[1]))
    assert req.sampling.max_tokens == answer_token_bound(dialog_schema(labels, dialogs[1], tidy=False))
    results = asyncio.run(ann.annotate(dialogs))
    assert not [r.error for r in results if r.error and "cut off" in r.error]
    for r in results:
        obj = json.loads(r.raw[-1], strict=False)  # the grammar lets a random model write control characters
        for t in obj["turns"]:
            assert len(t["motivation"]) <= OPEN_LABEL_CHARS and len(t["topics"]) <= MAX_TOPICS

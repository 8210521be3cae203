"""Backend.stream(): stop-string hold-back, the generate-then-yield default, token streaming in the
hf backend (tiny model) and the HTTP backend (project fault server), and the cache pass-through."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sage_dialog.backends import BackendError, ChatRequest, SamplingParams, load_backend
from sage_dialog.backends.base import ChatStream, Completion, StopHold
from sage_dialog.backends.cache import CachedBackend
from sage_dialog.backends.hf import HFBackend
from sage_dialog.backends.mock import MockBackend
from sage_dialog.backends.openai_backend import OpenAIBackend
from sage_dialog.core.errors import UserError

MSGS = [{"role": "user", "content": "i failed my exam today"}]
FAST = {"backoff_base_s": 0.01, "backoff_max_s": 0.05, "timeout_s": 2.0}


def run(coro):
    return asyncio.run(coro)


async def collect(stream: ChatStream) -> list[str]:
    async with stream:
        return [p async for p in stream]


# -- StopHold ------------------------------------------------------------------------------------


def test_stop_hold_never_leaks_part_of_a_stop_string() -> None:
    h = StopHold(["\n\nUser:"])
    out = [h.feed(p) for p in ["Hello", " there\n", "\nUs", "er: ignored", " more"]]
    assert out == ["Hello", " there", "", "", ""]
    assert h.stopped and h.flush() == ""
    # a held tail that turns out not to be a stop string is released
    h = StopHold(["\n\nUser:"])
    assert [h.feed("a\n"), h.feed("\nUx")] == ["a", "\n\nUx"]


@given(
    text=st.text(alphabet="ab}\n", max_size=30),
    stops=st.lists(st.text(alphabet="ab}\n", min_size=1, max_size=3), max_size=2),
    cuts=st.lists(st.integers(0, 30), max_size=6),
)
def test_stop_hold_equals_cutting_the_whole_text(text: str, stops: list[str], cuts: list[int]) -> None:
    h = StopHold(stops)
    bounds = sorted({0, len(text), *(min(c, len(text)) for c in cuts)})
    released = ""
    for a, b in itertools.pairwise(bounds):
        released += h.feed(text[a:b])
        assert not any(s in released for s in stops)
    released += h.flush()
    first = min((i for i in (text.find(s) for s in stops) if i >= 0), default=len(text))
    assert released == text[:first]


# -- the default: generate whole, yield once -----------------------------------------------------


def test_default_stream_yields_once_with_completion() -> None:
    # the mock provider without ``streaming``: a backend without token streaming (the protocol's default)
    b = MockBackend(fn=lambda r, i: Completion("one two. three", "length", 3))
    assert not b.supports_streaming
    s = b.stream(ChatRequest(MSGS, prefill="{x", sampling=SamplingParams(stop=(". ",))))
    assert run(collect(s)) == ["one two"]
    assert s.completion is not None and s.completion.text == "one two"
    assert s.completion.finish_reason == "stop" and s.completion.tokens_out == 3 and s.tokens_in == 6  # 5 prompt + 1 prefill words
    assert b.chat_requests[0].prefill == "{x"
    with pytest.raises(UserError, match="n=2"):
        b.stream(ChatRequest(MSGS, n=2))


# -- hf ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf(tiny_model: Path) -> HFBackend:
    b = load_backend(f"hf:{tiny_model}", num_threads=1)
    assert isinstance(b, HFBackend)
    return b


def test_hf_stream_matches_generate_token_by_token(hf: HFBackend) -> None:
    assert hf.supports_streaming
    for sp, prefill in [
        (SamplingParams(temperature=0.0, max_tokens=16), None),
        (SamplingParams(temperature=1.0, max_tokens=16, seed=5), "{u_motivation:"),
    ]:
        req = ChatRequest(MSGS, sampling=sp, prefill=prefill)
        [ref] = run(hf.generate([req]))
        s = hf.stream(req)
        pieces = run(collect(s))
        assert len(pieces) > 1, "expected several pieces, not one block"
        assert "".join(pieces) == ref.texts[0]  # same sampler, same seed: the same sample
        assert not ref.texts[0].startswith(prefill or "\0")  # the prefill is not repeated
        assert s.completion is not None
        assert (s.completion.finish_reason, s.completion.tokens_out) == (
            ref.completions[0].finish_reason,
            ref.completions[0].tokens_out,
        )
        assert s.tokens_in == ref.tokens_in


def test_hf_stream_cuts_stop_string_without_leaking(hf: HFBackend) -> None:
    sp = SamplingParams(temperature=1.0, max_tokens=24, seed=11)
    [ref] = run(hf.generate([ChatRequest(MSGS, sampling=sp)]))
    full = ref.texts[0]
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    assert stop.strip() and full.find(stop) > 0, f"pick a visible stop string from {full!r}"
    req = ChatRequest(MSGS, sampling=dataclasses.replace(sp, stop=(stop,)))
    [cut] = run(hf.generate([req]))
    s = hf.stream(req)
    pieces = run(collect(s))
    assert "".join(pieces) == cut.texts[0] == full[: full.find(stop)]
    assert s.completion is not None and s.completion.finish_reason == "stop"


def test_hf_stream_closed_early_stops_generation_and_frees_the_lock(hf: HFBackend) -> None:
    req = ChatRequest(MSGS, sampling=SamplingParams(temperature=1.0, max_tokens=400, seed=1))

    async def go() -> ChatStream:
        s = hf.stream(req)
        async with s:
            async for _ in s:
                break  # the consumer goes away after the first piece
        return s

    s = run(go())
    assert s.completion is not None and 0 < s.completion.tokens_out < 100
    assert not hf._lock.locked()
    # the backend is usable at once afterwards
    [r] = run(hf.generate([ChatRequest(MSGS, sampling=SamplingParams(max_tokens=4))]))
    assert r.completions[0].tokens_out > 0


# -- openai (HTTP) -------------------------------------------------------------------------------


def test_openai_stream_pieces_equal_generate(fault_server) -> None:
    srv = fault_server()
    b = OpenAIBackend("m", base_url=srv.base_url, **FAST)
    assert b.supports_streaming
    req = ChatRequest(MSGS, sampling=SamplingParams(max_tokens=8, seed=2), prefill="{u_")
    [ref] = run(b.generate([req]))
    s = b.stream(req)
    pieces = run(collect(s))
    assert len(pieces) == 8 and "".join(pieces) == ref.texts[0]
    assert s.completion is not None and s.completion.finish_reason == "length"
    assert s.completion.tokens_out == 8 and s.tokens_in > 0
    assert all(e.in_flight == 0 for e in b.endpoints)


def test_openai_stream_retries_only_before_the_first_piece(fault_server) -> None:
    srv = fault_server(rates={"500": 0.5, "429": 0.2}, seed=4)
    b = OpenAIBackend("m", base_url=srv.base_url, max_retries=20, **FAST)
    outs = [run(collect(b.stream(ChatRequest([{"role": "user", "content": f"q{i}"}])))) for i in range(6)]
    assert all(len(o) == 8 for o in outs)
    assert srv.counts["500"] + srv.counts["429"] >= 1 and b.retries == srv.counts["500"] + srv.counts["429"]


def test_openai_stream_truncated_after_text_raises_typed_error(fault_server) -> None:
    srv = fault_server(rates={"truncated": 1.0})
    b = OpenAIBackend("m", base_url=srv.base_url, max_retries=3, **FAST)
    got: list[str] = []

    async def go() -> None:
        async with b.stream(ChatRequest(MSGS)) as s:
            async for p in s:
                got.append(p)

    with pytest.raises(BackendError) as e:
        run(go())
    assert e.value.kind == "truncated"
    assert got, "part of the reply was yielded before the break"
    assert sum(srv.counts.values()) == 1  # not restarted once text was out


# -- cache ---------------------------------------------------------------------------------------


def test_cache_passes_streaming_through_and_stores_complete_results(fault_server, tmp_path: Path) -> None:
    srv = fault_server()
    inner = OpenAIBackend("m", base_url=srv.base_url, **FAST)
    c = CachedBackend(inner, tmp_path / "c.sqlite")
    assert c.supports_streaming
    req = ChatRequest(MSGS, sampling=SamplingParams(max_tokens=8, seed=1))

    async def first_piece_only() -> None:
        async with c.stream(req) as s:
            async for _ in s:
                break

    run(first_piece_only())
    assert len(c.store) == 0  # stopped early: nothing stored
    live = run(collect(c.stream(req)))
    assert len(live) == 8 and len(c.store) == 1
    s = c.stream(req)
    again = run(collect(s))
    assert again == ["".join(live)] and s.completion is not None and s.completion.cached
    assert srv.counts["ok"] == 2
    # generate() sees the streamed sample as sample 0 of the same request
    [r] = run(c.generate([req]))
    assert r.completions[0].cached and r.texts == ["".join(live)]


# -- steer.stream_turn on top of Backend.stream ------------------------------------------------------


def test_stream_turn_streams_hf_token_by_token_and_stops_when_closed(hf: HFBackend) -> None:
    from sage_dialog.roles.assistant import stream_turn
    from sage_dialog.roles.steering import parse_steering

    st = parse_steering(["a_motivation=joke", "a_emotion=playful", "a_topic=exam"])
    sp = SamplingParams(temperature=1.0, max_tokens=40, seed=2)

    async def whole() -> list:
        return [ev async for ev in stream_turn(hf, MSGS, steering=st, sampling=sp)]

    events = run(whole())
    texts = [e.text for e in events if e.kind == "text"]
    assert len(texts) > 1, "the reply should arrive in several pieces"
    done = events[-1].candidate
    assert done is not None and done.tokens_out > 0 and "".join(texts).strip() == done.reply

    async def first_text_then_leave() -> None:
        agen = stream_turn(hf, MSGS, steering=st, sampling=dataclasses.replace(sp, max_tokens=400))
        async for ev in agen:
            if ev.kind == "text":
                break
        await agen.aclose()  # e.g. the HTTP client went away

    run(first_text_then_leave())
    assert not hf._lock.locked()


def test_ledger_passes_token_streaming_through_and_counts_the_sample(hf: HFBackend) -> None:
    from sage_dialog.backends.ledger import Ledger

    ledger = Ledger("chat")
    metered = ledger.track(hf)
    assert metered.supports_streaming
    req = ChatRequest(MSGS, sampling=SamplingParams(temperature=0.0, max_tokens=12))
    pieces = run(collect(metered.stream(req)))
    assert len(pieces) > 1  # token by token, not generated whole
    [whole] = run(hf.generate([req]))
    assert "".join(pieces) == whole.completions[0].text
    usage = ledger.usage[metered.name]
    assert usage.samples == 1 and usage.requests == 1
    assert usage.tokens_out == whole.completions[0].tokens_out and usage.tokens_in == whole.tokens_in

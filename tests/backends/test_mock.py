"""The ``mock:`` provider: scripted outputs from the spec or a file, a callable, rules, scores,
streaming, a recorded history, usage; and a whole command run offline with it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from sage_dialog.backends import ChatRequest, SamplingParams, ScoreRequest, ScoringUnsupported, load_backend
from sage_dialog.backends.base import BackendConfig, parse_spec
from sage_dialog.backends.cache import CachedBackend
from sage_dialog.backends.mock import DEFAULT_OUTPUT, MockBackend
from sage_dialog.cli import main
from sage_dialog.core.errors import UserError

MSGS = [{"role": "user", "content": "i failed my exam today"}]


def run(coro):
    return asyncio.run(coro)


def test_spec_without_a_model_gives_the_default_script() -> None:
    assert parse_spec("mock:") == ("mock", "")
    b = load_backend("mock:")
    assert isinstance(b, MockBackend) and b.name == "mock:"
    [res] = run(b.generate([ChatRequest(MSGS, n=2)]))
    assert res.texts == [DEFAULT_OUTPUT, DEFAULT_OUTPUT]
    assert res.tokens_in == 5 and [c.tokens_out for c in res.completions] == [2, 2]
    with pytest.raises(UserError, match="PROVIDER:MODEL"):
        parse_spec("hf:")  # only the mock may name no model


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_outputs_from_a_file_cycle_over_samples_and_calls(tmp_path: Path, suffix: str) -> None:
    f = tmp_path / f"script{suffix}"
    f.write_text(json.dumps(["one", "two", "three"]))  # JSON is YAML too
    b = load_backend(f"mock:{f}")
    res = run(b.generate([ChatRequest(MSGS, n=2), ChatRequest(MSGS)]))
    assert [r.texts for r in res] == [["one", "two"], ["three"]]
    [again] = run(b.generate([ChatRequest(MSGS, n=2)]))
    assert again.texts == ["one", "two"]
    assert b.batches() == [2, 1] and len(b.history) == 3 and b.prompts()[0] == MSGS[0]["content"]


def test_rules_answer_by_regex_before_the_cycle(tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text("rules:\n  - {match: 'Candidates:', output: Response 2 is better}\n"
                 "  - {match: '^You are a real person', output: I feel fine.}\noutputs: [hello]\n")
    b = load_backend(f"mock:{f}")
    reqs = [ChatRequest([{"role": "user", "content": "Candidates:\nResponse 1: a"}]),
            ChatRequest([{"role": "system", "content": "You are a real person"}, *MSGS]), ChatRequest(MSGS)]
    assert [r.texts[0] for r in run(b.generate(reqs))] == ["Response 2 is better", "I feel fine.", "hello"]


def test_a_callable_sees_the_request_and_sample_index() -> None:
    b = MockBackend(fn=lambda r, i: f"{r.messages[-1]['content']} #{i}")
    [res] = run(b.generate([ChatRequest(MSGS, n=2, sample_offset=3)]))
    assert res.texts == ["i failed my exam today #3", "i failed my exam today #4"]


def test_stop_strings_and_max_tokens_end_an_answer_as_a_model_would() -> None:
    b = MockBackend(outputs=["{a_motivation: joke} and then a long reply here"])
    [stop] = run(b.generate([ChatRequest(MSGS, sampling=SamplingParams(stop=("}",)))]))
    assert stop.completions[0].text == "{a_motivation: joke" and stop.completions[0].finish_reason == "stop"
    [cut] = run(b.generate([ChatRequest(MSGS, sampling=SamplingParams(max_tokens=3))]))
    assert cut.completions[0].text == "{a_motivation: joke} and"
    assert (cut.completions[0].finish_reason, cut.completions[0].tokens_out) == ("length", 3)


def test_scores_scripted_uniform_or_unsupported() -> None:
    req = ScoreRequest(MSGS, [" yes", " no"])
    [s] = run(MockBackend(scores=[[-1.0, -3.0]]).score([req]))
    assert s.best == 0 and s.probs[0] > 0.8 and s.tokens_in == 5
    [u] = run(MockBackend().score([req]))
    assert u.probs == [0.5, 0.5]
    b = MockBackend(scoring=False)
    assert not b.supports_scoring
    with pytest.raises(ScoringUnsupported):
        run(b.score([req]))
    with pytest.raises(UserError, match="2 options"):
        run(MockBackend(scores=[[0.0]]).score([req]))


def test_streaming_word_by_word_and_the_default() -> None:
    async def collect(b: MockBackend) -> list[str]:
        async with b.stream(ChatRequest(MSGS, sampling=SamplingParams(stop=(". ",)))) as s:
            return [p async for p in s]

    text = "So sorry to hear. Bye"
    streamer = MockBackend(outputs=[text], streaming=True)
    assert streamer.supports_streaming
    pieces = run(collect(streamer))
    assert pieces == ["So", " sorry", " to", " hear"]
    assert run(collect(MockBackend(outputs=[text]))) == ["So sorry to hear"]
    assert run(collect(MockBackend(outputs=[text], stream_chunk=5))) == ["So so", "rry t", "o hea", "r"]


def test_bad_scripts_are_one_line_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such file"):
        load_backend(f"mock:{tmp_path / 'missing.yaml'}")
    bad = tmp_path / "bad.yaml"
    bad.write_text("outputs: [a]\nreplies: [b]\n")
    with pytest.raises(UserError, match="unknown key"):
        load_backend(f"mock:{bad}")
    bad.write_text("outputs: [a\n")
    with pytest.raises(UserError, match="malformed YAML"):  # the one YAML loader's words, as for configs
        load_backend(f"mock:{bad}")
    with pytest.raises(UserError, match="bad regex"):
        MockBackend(rules=[{"match": "(", "output": "x"}])
    with pytest.raises(UserError, match="unknown option"):
        load_backend(BackendConfig(spec="mock:", options={"output": ["x"]}))


def test_options_in_a_config_and_the_cache_key_follow_the_script(tmp_path: Path) -> None:
    db = tmp_path / "cache.sqlite"
    a = load_backend(BackendConfig(spec="mock:", options={"outputs": ["A"]}, cache=str(db)))
    b = load_backend(BackendConfig(spec="mock:", options={"outputs": ["B"]}, cache=str(db)))
    assert isinstance(a, CachedBackend)
    [ra] = run(a.generate([ChatRequest(MSGS)]))
    [rb] = run(b.generate([ChatRequest(MSGS)]))
    assert (ra.texts, rb.texts) == (["A"], ["B"])  # a different script is not a cache hit
    [again] = run(a.generate([ChatRequest(MSGS)]))
    assert again.completions[0].cached


def test_a_command_runs_offline_with_a_scripted_annotator(tmp_path: Path, capsys) -> None:
    dialogs = tmp_path / "d.jsonl"
    dialogs.write_text("\n".join(json.dumps({"id": f"d{i}", "turns": [
        {"role": "user", "text": f"I failed exam {i}."}, {"role": "assistant", "text": "I am sorry."}]})
        for i in range(2)) + "\n")
    answer = {"turns": [{"index": 0, "motivation": "venting", "emotion": "sad", "topics": ["exam"]},
                        {"index": 1, "motivation": "comfort", "emotion": "caring", "topics": ["exam"]}]}
    script = tmp_path / "answers.yaml"
    script.write_text(f"outputs:\n  - '{json.dumps(answer)}'\n  - not json at all\n")
    out = tmp_path / "y.jsonl"
    assert main(["annotate", str(dialogs), "-o", str(out), "--annotator", f"mock:{script}",
                 "--max-attempts", "1", "-q"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    rejects = [json.loads(line) for line in (tmp_path / "y.rejects.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["d0"] and len(rejects) == 1  # the second answer is not JSON
    assert rows[0]["turns"][0]["state"]["emotion"] == "sad"
    assert rows[0]["turns"][1]["action"]["motivation"] == "comfort"

"""Annotation: answer validation and repair, closed label sets, the stage end to end.

Backends: the in-process transformers backend on the tiny local model (its answers are garbage, so
this is the malformed path) and the real OpenAI-compatible HTTP backend against ``scripted_llm``, a
named stand-in for an LLM server (tests/dataprep/conftest.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sage_dialog.cli import main
from sage_dialog.core.errors import UserError
from sage_dialog.core.io import read_json, read_jsonl, write_jsonl
from sage_dialog.core.schema import Dialog, Turn
from sage_dialog.roles.annotator import (
    LabelSets,
    LLMAnnotator,
    answer_schema,
    check_answer,
    dialog_schema,
    load_few_shot,
)
from sage_dialog.stages import annotate
from sage_dialog.stages.annotate import AnnotateConfig


def run_config(cfg: annotate.AnnotateConfig) -> annotate.Result:
    """The annotate stage run as the command runs it from its config."""
    return annotate.run(annotate.Settings.of(cfg), inputs=cfg.inputs(), out=cfg.output, files=cfg.files())


def dlg(id_: str, *texts: str) -> Dialog:
    return Dialog(id=id_, turns=[Turn(role="user" if i % 2 == 0 else "assistant", text=t) for i, t in enumerate(texts)])


D = dlg("d1", "I failed my exam.", "That's rough. Want to talk about it?", "Yes please.")


def answer(*items: dict) -> str:
    return json.dumps({"turns": list(items)})


def item(i: int, m: str = "venting", e: str = "sad", t: list[str] | None = None) -> dict:
    return {"index": i, "motivation": m, "emotion": e, "topics": ["exam"] if t is None else t}


# ---------------------------------------------------------------------------------------------
# validation and local repair


def test_check_answer_valid_and_cleaned() -> None:
    chk = check_answer(answer(item(0, "Venting: {anger}"), item(1, "comfort", "calm"), item(2, e="hopeful")), D,
                       LabelSets(), tidy=False)
    assert chk.problems == [] and chk.tags is not None
    assert chk.tags[0].motivation == "Venting anger"  # SAC delimiters cleaned away
    assert [t.emotion for t in chk.tags] == ["sad", "calm", "hopeful"]


def test_check_answer_local_repairs() -> None:
    fenced = "Sure!\n```json\n" + answer(item(0), item(1), item(2))[:-2] + ",]}\n```"
    chk = check_answer(fenced, D, LabelSets(), tidy=False)
    assert chk.tags is not None and "trailing commas" in chk.repairs
    bare = json.dumps([{"motivation": "a", "emotion": "b", "topic": "x, y"}] * 3)  # list, topic as a string
    chk = check_answer(bare, D, LabelSets(), tidy=False)
    assert chk.tags is not None and chk.tags[0].topics == ["x", "y"]
    assert {"bare list", "topic for topics", "topics as a string"} <= set(chk.repairs)
    shuffled = answer(item(2, "c"), item(0, "a"), item(1, "b"))  # numbered out of order
    chk = check_answer(shuffled, D, LabelSets(), tidy=False)
    assert [t.motivation for t in chk.tags or []] == ["a", "b", "c"]


@pytest.mark.parametrize(("text", "problem"), [
    ('{"turns": [', "not JSON"),
    (answer(item(0), item(1)), "expected 3 turns, got 2"),
    (answer({"index": 0, "motivation": "x", "topics": []}, item(1), item(2)), "turn 0: missing field 'emotion'"),
    (answer(item(0, m="  "), item(1), item(2)), "turn 0: empty 'motivation'"),
    (answer(item(0), item(1), {"index": 5, "motivation": "x", "emotion": "y", "topics": []}), "are not 0..2"),
    ('"just a string"', "expected a JSON object"),
])
def test_check_answer_problems(text: str, problem: str) -> None:
    chk = check_answer(text, D, LabelSets(), tidy=False)
    assert chk.tags is None and any(problem in p for p in chk.problems), chk.problems


def test_closed_sets_map_or_reject() -> None:
    labels = LabelSets.from_spec({"assistant.motivation": "esconv_strategies", "user.emotion": "empathetic_emotions"})
    assert labels.resolve("assistant", "motivation", "reflection of feeling") == "Reflection of feelings"
    assert labels.resolve("assistant", "motivation", "self disclosure") == "Self-disclosure"
    assert labels.resolve("assistant", "motivation", "telepathy") is None
    assert labels.resolve("user", "motivation", "telepathy") == "telepathy"  # open for users
    assert labels.resolve("user", "emotion", "feeling anxious") == "anxious"
    strict = LabelSets(labels.sets, mode="reject")
    assert strict.resolve("assistant", "motivation", "QUESTION") == "Question"
    assert strict.resolve("assistant", "motivation", "reflection of feeling") is None
    chk = check_answer(answer(item(0, e="sad"), item(1, m="questions", e="calm"), item(2, e="nervous wreck")), D,
                       labels, tidy=False)
    assert chk.problems == ["turn 2: emotion 'nervous wreck' is not an allowed label"]
    chk = check_answer(answer(item(0, e="sad"), item(1, m="questions", e="calm"), item(2, e="Hopeful")), D,
                       labels, tidy=False)
    assert chk.tags is not None and chk.tags[1].motivation == "Question" and chk.mapped == 1
    with pytest.raises(UserError, match=r"bad key 'assistant\.mood'"):
        LabelSets.from_spec({"assistant.mood": "esconv_strategies"})


def test_answer_schema_has_enums_for_closed_sets() -> None:
    labels = LabelSets.from_spec({"motivation": "esconv_strategies"})
    schema = json.dumps(answer_schema(labels, tidy=True))
    assert '"Providing Suggestions"' in schema and '"text"' in schema
    assert '"enum"' not in json.dumps(answer_schema(LabelSets(), tidy=False))


# ---------------------------------------------------------------------------------------------
# the stage with the sandbox oracle


def test_annotate_with_oracle(tmp_path: Path) -> None:
    from sage_dialog.sandbox.corpus import CorpusConfig, generate_corpus

    dialogs = generate_corpus(CorpusConfig(n_dialogs=12, seed=3))
    dialogs.append(dlg("unreadable", "zzz qqq", "hmm"))
    src = tmp_path / "raw.jsonl"
    write_jsonl(src, dialogs)
    cfg = AnnotateConfig(input=src, output=tmp_path / "ann.jsonl", annotator="oracle", chunk_size=5)
    run_config(cfg)
    out = list(read_jsonl(cfg.output, Dialog))
    assert len(out) == 12
    for d in out:
        for t, gold in zip(d.turns, d.meta["gold"], strict=True):
            tags = t.state if t.role == "user" else t.action
            assert tags is not None and (t.action if t.role == "user" else t.state) is None
            assert tags.motivation == gold["motivation"] and tags.emotion == gold["emotion"]
    rejects = [json.loads(line) for line in cfg.rejects_path().read_text().splitlines()]
    assert [r["id"] for r in rejects] == ["unreadable"] and "turn 0" in rejects[0]["reason"]
    summary = read_json(cfg.summary_path())["summary"]
    assert summary["dialogs"] == 13 and summary["annotated"] == 12 and summary["rejected"] == 1
    assert sum(summary["labels"]["user.motivation"].values()) == sum(len(d.turns) for d in out) // 2


# ---------------------------------------------------------------------------------------------
# the tiny local model: garbage answers, every dialog rejected with a reason and counted


@pytest.mark.slow
def test_annotate_tiny_model_malformed_path(tmp_path: Path, tiny_model: Path) -> None:
    src = tmp_path / "raw.jsonl"
    write_jsonl(src, [D, dlg("d2", "hello there", "hi! how are you?")])
    # constrained=False: the unconstrained path, where a random model's answers are garbage
    cfg = AnnotateConfig(input=src, output=tmp_path / "ann.jsonl", annotator=f"hf:{tiny_model}", max_attempts=2,
                         max_tokens_per_turn=8, backend_options={"constrained": False})
    run_config(cfg)
    assert list(read_jsonl(cfg.output, Dialog, allow_empty=True)) == []
    rejects = [json.loads(line) for line in cfg.rejects_path().read_text().splitlines()]
    assert [r["id"] for r in rejects] == ["d1", "d2"]
    for r in rejects:
        assert r["attempts"] == 2 and len(r["raw"]) == 2 and r["reason"]
        assert r["dialog"]["turns"][0]["text"] in ("I failed my exam.", "hello there")  # the input is kept whole
    man = read_json(cfg.summary_path())
    assert man["summary"]["rejected"] == 2 and man["summary"]["annotated"] == 0
    assert sum(man["summary"]["reject_reasons"].values()) == 2
    assert man["usage"]["requests"] == 4 and man["usage"]["model_calls"] == 4
    assert man["usage"]["ledger"]["requests"] == 4 and man["usage"]["ledger"]["cache_hits"] == 0


def test_dialog_schema_fixes_count_order_and_role_sets() -> None:
    labels = LabelSets({("user", "motivation"): ["venting", "asking"], ("assistant", "motivation"): ["Question"],
                        ("user", "emotion"): ["sad"], ("assistant", "emotion"): ["calm"]})
    sch = dialog_schema(labels, D, tidy=True)
    turns = sch["properties"]["turns"]
    assert turns["minItems"] == turns["maxItems"] == len(D.turns) and turns["items"] is False
    first, second = turns["prefixItems"][:2]
    assert first["properties"]["index"] == {"const": 0} and second["properties"]["index"] == {"const": 1}
    assert first["properties"]["motivation"] == {"enum": ["venting", "asking"]}
    assert second["properties"]["motivation"] == {"enum": ["Question"]}
    assert first["properties"]["topics"]["items"]["type"] == "string"  # open set
    assert "text" in first["required"] and first["additionalProperties"] is False


def test_annotate_tiny_model_closed_sets_are_valid_by_construction(tmp_path: Path, tiny_model: Path) -> None:
    """The random tiny model writes garbage unconstrained; with closed label sets and the hf
    backend's constrained decoding every label it gives is valid, first time."""
    pytest.importorskip("xgrammar")
    sets = {"motivation": ["venting", "asking", "sharing news"], "emotion": ["sad", "happy", "calm"],
            "topics": ["work", "school", "family"]}
    for name, values in sets.items():
        (tmp_path / f"{name}.txt").write_text("\n".join(values) + "\n")
    src = tmp_path / "raw.jsonl"
    write_jsonl(src, [D, dlg("d2", "hello there", "hi! how are you?"), dlg("d3", "my cat is sick", "Oh no."),
                      dlg("d4", "new job!", "Congrats!", "thanks, I start monday")])
    cfg = AnnotateConfig(input=src, output=tmp_path / "ann.jsonl", annotator=f"hf:{tiny_model}",
                         labels={k: str(tmp_path / f"{k}.txt") for k in sets}, closed="reject", temperature=1.0)
    run_config(cfg)
    out = list(read_jsonl(cfg.output, Dialog))
    assert len(out) == 4, cfg.rejects_path().read_text()
    for d in out:
        for t in d.turns:
            tags = t.state if t.role == "user" else t.action
            assert tags is not None and tags.motivation in sets["motivation"] and tags.emotion in sets["emotion"]
            assert all(x in sets["topics"] for x in tags.topics or [])
    summary = read_json(cfg.summary_path())
    assert summary["summary"]["rejected"] == 0 and summary["usage"]["requests"] == 4  # no repair round


# ---------------------------------------------------------------------------------------------
# a served model: the real OpenAI-compatible backend against the scripted server


def served_dialogs() -> list[Dialog]:
    return [
        dlg("valid", "VALID I got the job!", "Congratulations, that is huge.", "Thanks, I start monday."),
        dlg("fenced", "FENCED my cat is sick", "Oh no, what happened?"),
        dlg("broken", "BROKEN exams next week", "You have time to prepare."),
        dlg("wrongcount", "WRONGCOUNT rain again", "Rainy days can be cozy."),
        dlg("missing", "MISSING lost my keys", "That is annoying."),
        dlg("missingonce", "MISSINGONCE new phone", "Nice, which one?"),
        dlg("garbage", "GARBAGE hello", "hi"),
    ]


def served_config(tmp_path: Path, srv, **kw) -> AnnotateConfig:  # type: ignore[no-untyped-def]
    src = tmp_path / "raw.jsonl"
    if not src.exists():
        write_jsonl(src, served_dialogs())
    kw.setdefault("backend_options", {"base_url": srv.base_url})
    return AnnotateConfig(input=src, output=tmp_path / "ann.jsonl", annotator="openai:scripted",
                          cache=str(tmp_path / "cache.sqlite"), max_attempts=3, **kw)


def test_annotate_served_model_repairs_rejects_and_resumes(tmp_path: Path, scripted_llm, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("sage_dialog.backends.openai_backend")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-secret")
    cfg = served_config(tmp_path, scripted_llm)
    run_config(cfg)
    out = {d.id: d for d in read_jsonl(cfg.output, Dialog)}
    assert set(out) == {"valid", "fenced", "broken", "missingonce"}
    v = out["valid"]
    assert v.turns[0].state is not None and v.turns[0].state.emotion == "Anxious"  # cleaned
    assert v.turns[1].action is not None and v.turns[1].action.motivation == "Reflection of feelings"
    assert v.turns[2].state is not None and v.turns[2].state.topics == ["monday"]
    rejects = {r["id"]: r for r in map(json.loads, cfg.rejects_path().read_text().splitlines())}
    assert set(rejects) == {"wrongcount", "missing", "garbage"}
    assert "expected 2 turns, got 1" in rejects["wrongcount"]["reason"]
    assert "missing field 'emotion'" in rejects["missing"]["reason"]
    assert "not JSON" in rejects["garbage"]["reason"]
    assert all(r["attempts"] == 3 and len(r["raw"]) == 3 for r in rejects.values())
    man = read_json(cfg.summary_path())
    s = man["summary"]
    assert (s["dialogs"], s["annotated"], s["rejected"]) == (7, 4, 3)
    assert s["reject_reasons"] == {"wrong_turn_count": 1, "missing_field": 1, "malformed_json": 1}
    assert s["repaired_by_retry"] == 2  # broken, missingonce
    assert s["repaired_locally"] == 1  # fenced, with a trailing comma
    assert s["attempts"] == {"1": 2, "2": 2, "3": 3}
    # requests: 7 first answers, 5 repairs, 3 last tries
    assert scripted_llm.hits == 15 and man["usage"]["model_calls"] == 15
    # the same input again: every answer from the cache, zero calls to the server
    first = cfg.output.read_text()
    run_config(cfg)
    assert scripted_llm.hits == 15
    usage = read_json(cfg.summary_path())["usage"]
    assert usage["model_calls"] == 0
    assert usage["ledger"]["cache_hits"] == 15 and usage["ledger"]["requests"] == 15  # the backends' ledger agrees
    assert cfg.output.read_text() == first


def test_annotate_served_closed_sets_and_tidy(tmp_path: Path, scripted_llm, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("sage_dialog.backends.openai_backend")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-secret")
    src = tmp_path / "raw.jsonl"
    write_jsonl(src, [dlg("near", "NEARMISS so worried", "That sounds hard."),
                      dlg("ok", "VALID hi", "Hello, what is on your mind?")])
    cfg = served_config(tmp_path, scripted_llm, labels={"assistant.motivation": "esconv_strategies",
                                                          "user.emotion": "empathetic_emotions"}, tidy=True)
    run_config(cfg)
    out = {d.id: d for d in read_jsonl(cfg.output, Dialog)}
    near = out["near"]
    assert near.turns[1].action is not None and near.turns[1].action.motivation == "Reflection of feelings"
    assert near.turns[0].state is not None and near.turns[0].state.emotion == "anxious"  # mapped onto the set
    # tidy: the bridging question is added, the original text kept
    assert near.turns[1].text == "That sounds hard. How does that feel?"
    assert near.turns[1].original_text == "That sounds hard."
    assert out["ok"].turns[1].original_text is None  # already ended with a question: unchanged
    prompt = scripted_llm.bodies[0]["messages"][0]["content"]
    assert "Providing Suggestions" in prompt and "bridging" in prompt
    assert read_json(cfg.summary_path())["summary"]["tidied_turns"] == 1


# ---------------------------------------------------------------------------------------------
# the command


def test_annotate_command_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "raw.jsonl"
    write_jsonl(src, [D])
    out = tmp_path / "ann.jsonl"
    assert main(["annotate", str(tmp_path / "nope.jsonl"), "-o", str(out), "--annotator", "oracle"]) == 2
    assert "nope.jsonl: no such file" in capsys.readouterr().err
    assert main(["annotate", str(src), "-o", str(out), "--annotator", "oracle", "--labels", "mood=x"]) == 2
    assert main(["annotate", str(src), "-o", str(out), "--annotator", "bogus:thing"]) == 2
    assert "unknown provider 'bogus'" in capsys.readouterr().err
    assert main(["annotate", str(src), "-o", str(out), "--annotator", "openai:x", "--labels",
                 "emotion=/no/such/set.txt"]) == 2
    assert "no such label-set file" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"v": 1, "kind": "dialog", "id": "x", "turns": [{"role": "robot", "text": "hi"}]}\n')
    assert main(["annotate", str(bad), "-o", str(out), "--annotator", "oracle"]) == 2
    assert "bad.jsonl: record 1: field turns[0].role" in capsys.readouterr().err
    assert not out.exists()
    assert main(["annotate", str(src), "-o", str(out), "--annotator", "oracle", "-q"]) == 0


def test_llm_annotator_is_a_role() -> None:
    from sage_dialog.roles.protocols import Annotator

    class Nothing:  # only used to build the annotator object; never asked to generate
        name = "none:x"

    ann = LLMAnnotator(Nothing(), labels=LabelSets())  # type: ignore[arg-type]
    assert isinstance(ann, Annotator)
    msgs = ann.messages(D)
    assert msgs[-1]["content"].splitlines()[0] == "[0] user: I failed my exam."
    assert "3 turns, numbered 0 to 2" in msgs[0]["content"]
    # the dialog's answer schema travels with the request, for backends with structured output
    assert ann._request(D, msgs).json_schema == dialog_schema(LabelSets(), D, tidy=False)


def test_annotate_sharegpt_in_and_out(tmp_path: Path) -> None:
    from sage_dialog.formats.sharegpt import read_sharegpt, write_sharegpt
    from sage_dialog.sandbox.corpus import CorpusConfig, generate_corpus

    raw = tmp_path / "raw.json"
    write_sharegpt(raw, [d.model_copy(update={"meta": {}}) for d in generate_corpus(CorpusConfig(n_dialogs=4, seed=1))])
    assert raw.read_text().lstrip().startswith("[")
    out, sg = tmp_path / "ann.jsonl", tmp_path / "annotated.json"
    sac_out = tmp_path / "chained.json"
    assert main(["annotate", str(raw), "-o", str(out), "--annotator", "oracle", "--sharegpt-out", str(sg),
                 "--sac-out", str(sac_out), "-q"]) == 0
    annotated = list(read_jsonl(out, Dialog))
    back = read_sharegpt(sg)
    assert [d.id for d in back] == [d.id for d in annotated] and len(back) == 4
    for a, b in zip(annotated, back, strict=True):
        assert [(t.text, t.state, t.action) for t in a.turns] == [(t.text, t.state, t.action) for t in b.turns]
    first = json.loads(sg.read_text())[0]["conversations"][0]["value"]
    assert first.startswith("{motivation: ")  # the original annotated style
    # chained in the same flow: gpt turns carry the preceding user's tags (u_*) and their own (a_*)
    chained = read_sharegpt(sac_out)
    for a, c in zip(annotated, chained, strict=True):
        assert c.turns[0].state is None and c.turns[1].state == a.turns[0].state
        assert c.turns[1].action == a.turns[1].action
    assert json.loads(sac_out.read_text())[0]["conversations"][1]["value"].startswith("{u_motivation: ")


def test_annotate_served_server_errors_reject_only_their_dialog(tmp_path: Path, scripted_llm, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("sage_dialog.backends.openai_backend")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-secret")
    src = tmp_path / "raw.jsonl"
    write_jsonl(src, [dlg("down", "HTTP500 anyone there?", "yes"), dlg("fine", "VALID hello", "hi there")])
    cfg = served_config(tmp_path, scripted_llm, backend_options={"base_url": scripted_llm.base_url, "max_retries": 0})
    run_config(cfg)
    assert [d.id for d in read_jsonl(cfg.output, Dialog)] == ["fine"]
    (rej,) = map(json.loads, cfg.rejects_path().read_text().splitlines())
    assert rej["id"] == "down" and rej["reason"].startswith("backend error:") and "HTTP 500" in rej["reason"]
    assert rej["attempts"] == 3  # the failed call was sent again as it was, not as a repair
    assert all(len(b["messages"]) == 2 for b in scripted_llm.bodies)
    assert read_json(cfg.summary_path())["summary"]["reject_reasons"] == {"backend_error": 1}


def test_annotate_served_cut_off_answer_gets_a_bigger_budget(tmp_path: Path, scripted_llm, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("sage_dialog.backends.openai_backend")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-secret")
    src = tmp_path / "raw.jsonl"
    write_jsonl(src, [dlg("long", "LONG tell me everything", "Sure, where to start?")])
    cfg = served_config(tmp_path, scripted_llm)
    run_config(cfg)
    assert [d.id for d in read_jsonl(cfg.output, Dialog)] == ["long"]
    assert [b["max_tokens"] for b in scripted_llm.bodies] == [160, 320]
    assert read_json(cfg.summary_path())["summary"]["attempts"] == {"2": 1}


def test_few_shot_and_custom_prompt(tmp_path: Path, scripted_llm, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("sage_dialog.backends.openai_backend")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-secret")
    from sage_dialog.core.schema import Tags

    ex = Dialog(id="ex", turns=[
        Turn(role="user", text="I aced my test!", state=Tags(motivation="sharing news", emotion="proud", topics=["test"])),
        Turn(role="assistant", text="Amazing, well done!", action=Tags(motivation="praise", emotion="happy", topics=[])),
    ])
    shots = tmp_path / "shots.jsonl"
    write_jsonl(shots, [ex])
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("Label all $n_turns turns as JSON.\n$label_rules")
    src = tmp_path / "raw.jsonl"
    write_jsonl(src, [dlg("one", "VALID my cat is back", "So glad to hear it!")])
    out = tmp_path / "ann.jsonl"
    assert main(["annotate", str(src), "-o", str(out), "--annotator", "openai:scripted", "--backend-option",
                 f"base_url={scripted_llm.base_url}", "--few-shot", str(shots), "--prompt", str(prompt), "-q"]) == 0
    msgs = scripted_llm.bodies[0]["messages"]
    assert msgs[0] == {"role": "system", "content": "Label all 2 turns as JSON.\n"}
    assert msgs[1]["content"] == "[0] user: I aced my test!\n[1] assistant: Amazing, well done!"
    shown = json.loads(msgs[2]["content"])["turns"]
    assert msgs[2]["role"] == "assistant" and shown[0]["emotion"] == "proud" and shown[1]["motivation"] == "praise"
    assert msgs[3]["content"].startswith("[0] user: VALID my cat is back")
    assert len(list(read_jsonl(out, Dialog))) == 1
    # a few-shot example without labels is refused, naming the record and field
    write_jsonl(shots, [dlg("bare", "hi", "hello")])
    with pytest.raises(UserError, match=r"shots.jsonl: record 1: field turns\[0\].state"):
        load_few_shot(shots)


@pytest.mark.slow
def test_annotate_real_transformers_serve(tmp_path: Path, tiny_model: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A real server (`transformers serve` on the tiny model) through OpenAIBackend: garbage answers
    land in the rejects with reasons, and a second run makes zero model calls."""
    servers = pytest.importorskip("sage_dialog.backends.servers")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-secret")
    src = tmp_path / "raw.jsonl"
    write_jsonl(src, [D, dlg("d2", "hello there", "hi! how are you?")])
    with servers.transformers_server(tiny_model) as srv:
        cfg = AnnotateConfig(input=src, output=tmp_path / "ann.jsonl", annotator=f"openai:{srv.model}",
                             backend_options={"base_url": srv.base_url, "timeout_s": 120},
                             cache=str(tmp_path / "cache.sqlite"), max_attempts=2, max_tokens_per_turn=8)
        run_config(cfg)
        rejects = [json.loads(line) for line in cfg.rejects_path().read_text().splitlines()]
        assert sorted(r["id"] for r in rejects) == ["d1", "d2"]
        assert all(r["reason"] and r["attempts"] == 2 for r in rejects)
        assert read_json(cfg.summary_path())["usage"]["model_calls"] == 4
        run_config(cfg)
        assert read_json(cfg.summary_path())["usage"]["model_calls"] == 0
    assert not servers.port_is_open(srv.port)


def test_annotate_reads_any_dialog_format(tmp_path: Path) -> None:
    from sage_dialog.formats.llamafactory import write_sft_export
    from sage_dialog.formats.trl import write_trl_sft
    from sage_dialog.sandbox.corpus import CorpusConfig, generate_corpus

    dialogs = generate_corpus(CorpusConfig(n_dialogs=3, seed=2))
    write_trl_sft(tmp_path / "trl.jsonl", dialogs)
    write_sft_export(tmp_path / "lf", dialogs, style="raw")
    for src in (tmp_path / "trl.jsonl", tmp_path / "lf"):
        out = tmp_path / f"{src.stem}.ann.jsonl"
        run_config(AnnotateConfig(input=src, output=out, annotator="oracle"))
        got = list(read_jsonl(out, Dialog))
        assert [[t.text for t in d.turns] for d in got] == [[t.text for t in d.turns] for d in dialogs]
        assert all(t.state is not None for d in got for t in d.turns if t.role == "user")
    with pytest.raises(UserError, match="holds no dialogs"):
        list(annotate.load_dialogs(tmp_path / "trl.jsonl", "pairs"))

"""EmpatheticDialogues and ESConv importers, the seed file, label sets and `sage-dialog import`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sage_dialog.cli import main
from sage_dialog.core.errors import UserError
from sage_dialog.core.io import read_jsonl
from sage_dialog.core.schema import Dialog
from sage_dialog.formats.empathetic import read_empathetic_csv, read_seeds, write_seeds
from sage_dialog.formats.esconv import read_esconv
from sage_dialog.labels import builtin_label_sets, load_label_set

DATA = Path(__file__).parent / "data"


def test_label_sets_shipped() -> None:
    assert set(builtin_label_sets()) >= {"esconv_strategies", "empathetic_emotions"}
    assert len(load_label_set("esconv_strategies")) == 8
    emotions = load_label_set("empathetic_emotions")
    assert len(emotions) == 32 and "sentimental" in emotions and "terrified" in emotions


def test_label_file_errors(tmp_path: Path) -> None:
    f = tmp_path / "l.txt"
    f.write_text("# comment\nA\n\na\n")
    with pytest.raises(UserError, match=r"l.txt: record 4: label 'a' repeats line 2"):
        load_label_set(f)
    with pytest.raises(UserError, match="no such label-set file"):
        load_label_set(tmp_path / "missing.txt")


def test_empathetic_csv() -> None:
    dialogs = list(read_empathetic_csv(DATA / "ed_sample.csv"))
    assert [d.id for d in dialogs] == ["hit:0_conv:1", "hit:1_conv:2", "hit:2_conv:3"]
    d0 = dialogs[0]
    assert [t.role for t in d0.turns] == ["user", "assistant", "user", "assistant"]
    assert "people, but" in d0.turns[0].text and "_comma_" not in d0.turns[0].text
    assert d0.meta["emotion"] == "sentimental"
    assert d0.meta["emotion"] in load_label_set("empathetic_emotions")
    # two utterances of the first speaker are merged; a row with extra fields is read
    d1 = dialogs[1]
    assert [t.role for t in d1.turns] == ["user", "assistant"]
    assert d1.turns[0].text.endswith("I could not see anything.")
    assert d1.turns[1].text == "Oh no! Did you have candles at least?"


def test_empathetic_csv_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("conv_id,utterance_idx,context\nx,1,sad\n")
    with pytest.raises(UserError, match=r"bad.csv: record 1: header lacks column\(s\) prompt, speaker_idx, utterance"):
        list(read_empathetic_csv(bad))
    bad.write_text("conv_id,utterance_idx,context,prompt,speaker_idx,utterance\nx,one,sad,p,1,hi\n")
    with pytest.raises(UserError, match=r"record 2: field utterance_idx: not an integer"):
        list(read_empathetic_csv(bad))
    bad.write_bytes(b"conv_id,utterance_idx,context,prompt,speaker_idx,utterance\nx,1,sad,p,1,\xff\n")
    with pytest.raises(UserError, match="not UTF-8"):
        list(read_empathetic_csv(bad))


def test_seed_file_roundtrip(tmp_path: Path) -> None:
    seeds = read_seeds(DATA / "test_sent.tsv")
    assert seeds == ["I just got a puppy and she chewed my shoes, haha.", "My exam is tomorrow and I am so nervous.",
                     "I lost my job today."]
    out = tmp_path / "s.txt"
    assert write_seeds(out, seeds) == 3
    assert read_seeds(out) == seeds


def test_esconv() -> None:
    dialogs = list(read_esconv(DATA / "esconv_sample.json"))
    d = dialogs[0]
    assert [t.role for t in d.turns] == ["user", "assistant", "user", "assistant"]
    # consecutive seeker turns merged, consecutive supporter turns merged with both strategies kept
    assert d.turns[0].text == "Not great. I think I will be laid off."
    assert d.turns[1].action is not None and d.turns[1].action.motivation == "Reflection of feelings"
    assert d.meta["strategies"][1] == ["Reflection of feelings", "Question"]
    assert d.turns[3].action.motivation == "Providing Suggestions"  # type: ignore[union-attr]
    # a supporter greeting before the seeker speaks is kept in meta, not dropped
    assert d.meta["leading_supporter"] == ["Hello, how are you today?"]
    assert d.meta["emotion_type"] == "anxiety" and d.meta["problem_type"] == "job crisis"
    # strategy spelling is made canonical
    assert dialogs[1].turns[1].action.motivation == "Affirmation and Reassurance"  # type: ignore[union-attr]
    strategies = set(load_label_set("esconv_strategies"))
    assert all(t.action.motivation in strategies for dd in dialogs for t in dd.turns if t.action)


def test_esconv_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"dialog": [{"speaker": "seeker", "content": "hi"},
                                           {"speaker": "supporter", "content": "yo", "annotation": {"strategy": "Magic"}}]}]))
    with pytest.raises(UserError, match=r"bad.json: 1 unknown strategy value\(s\) .*'Magic' x1 \(first at record 1, "
                                        r"field dialog\[1\].annotation.strategy\)"):
        list(read_esconv(bad))
    bad.write_text(json.dumps([{"dialog": [{"speaker": "bot", "content": "hi"}]}]))
    with pytest.raises(UserError, match=r"field dialog\[0\].speaker"):
        list(read_esconv(bad))


def test_import_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, seeds = tmp_path / "ed.jsonl", tmp_path / "seeds.txt"
    assert main(["import", "empathetic", str(DATA / "ed_sample.csv"), "-o", str(out), "--seeds-out", str(seeds)]) == 0
    dialogs = list(read_jsonl(out, Dialog))
    assert len(dialogs) == 3
    assert read_seeds(seeds) == [d.turns[0].text for d in dialogs]
    assert main(["import", "esconv", str(DATA / "esconv_sample.json"), "-o", str(tmp_path / "es.jsonl"), "--limit", "1"]) == 0
    assert len(list(read_jsonl(tmp_path / "es.jsonl", Dialog))) == 1
    assert main(["import", "empathetic", str(DATA / "test_sent.tsv"), "-o", str(tmp_path / "s.jsonl")]) == 0
    assert [len(d.turns) for d in read_jsonl(tmp_path / "s.jsonl", Dialog)] == [1, 1, 1]
    # bad input: exit 2, one line naming the file, no output left behind
    missing = tmp_path / "nope.csv"
    assert main(["import", "empathetic", str(missing), "-o", str(tmp_path / "x.jsonl")]) == 2
    assert f"{missing}: no such file" in capsys.readouterr().err
    assert not (tmp_path / "x.jsonl").exists()


@pytest.mark.parametrize("reader", [read_empathetic_csv, read_esconv])
def test_importers_never_crash_on_garbage(tmp_path: Path, reader) -> None:  # type: ignore[no-untyped-def]
    """Whatever the bytes, an importer gives dialogs or a UserError naming the file, never a traceback."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    header = "conv_id,utterance_idx,context,prompt,speaker_idx,utterance\n"
    json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                               lambda c: st.lists(c, max_size=3) | st.dictionaries(
                                   st.sampled_from(["dialog", "speaker", "content", "annotation", "strategy", "x"]),
                                   c, max_size=4), max_leaves=12)
    texts = st.one_of(st.text(max_size=80).map(lambda t: header + t), json_values.map(json.dumps), st.text(max_size=40))

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(texts)
    def check(text: str) -> None:
        f = tmp_path / ("x.csv" if reader is read_empathetic_csv else "x.json")
        f.write_text(text, encoding="utf-8")
        try:
            for d in reader(f):
                assert d.turns and d.turns[0].role == "user"
                assert all(a.role != b.role for a, b in zip(d.turns, d.turns[1:], strict=False))
        except UserError as e:
            assert all(line.startswith(str(f)) for line in e.problems), e.problems

    check()


# -- real ESConv files: FailedESConv.json names speakers and strategies its own way ------------------


def test_failed_esconv_spellings_are_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The published FailedESConv.json says speaker/listener and Questions, Other, Direct Guidance, ..."""
    out = tmp_path / "failed.jsonl"
    assert main(["import", "esconv", str(DATA / "failed_esconv_sample.json"), "-o", str(out)]) == 0
    dialogs = [Dialog.model_validate_json(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert [d.turns[0].role for d in dialogs] == ["user", "user"]
    strategies = [s for d in dialogs for ss in d.meta["strategies"] for s in ss]
    assert strategies == ["Restatement or Paraphrasing", "Question", "Providing Suggestions",
                          "Affirmation and Reassurance", "Others", "Question", "Reflection of feelings"]
    assert dialogs[0].meta["leading_supporter"] == ["Hi there, what brings you here today?"]
    assert set(strategies) <= set(load_label_set("esconv_strategies"))
    capsys.readouterr()


def test_esconv_unknown_strategies_listed_mapped_or_kept(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = json.loads((DATA / "failed_esconv_sample.json").read_text(encoding="utf-8"))
    data[0]["dialog"][3]["annotation"]["strategy"] = "Mind Reading"
    data[1]["dialog"][1]["annotation"]["strategy"] = "Mind Reading"
    data[1]["dialog"][3]["annotation"]["strategy"] = "Humour"
    src = tmp_path / "es.json"
    src.write_text(json.dumps(data), encoding="utf-8")
    out = tmp_path / "es.jsonl"
    assert main(["import", "esconv", str(src), "-o", str(out)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"error: {src}: 2 unknown strategy value(s) (map them with --label-map FILE or keep them with "
                   "--keep-unknown): 'Mind Reading' x2 (first at record 1, field dialog[3].annotation.strategy); "
                   "'Humour' x1 (first at record 2, field dialog[3].annotation.strategy)"]
    assert not out.exists()
    label_map = tmp_path / "map.yaml"
    label_map.write_text("Mind Reading: reflection of feelings\nHumour: Others\n", encoding="utf-8")
    assert main(["import", "esconv", str(src), "-o", str(out), "--label-map", str(label_map)]) == 0
    first = [Dialog.model_validate_json(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert first[0].meta["strategies"][1][0] == "Reflection of feelings" and first[1].turns[3].action.motivation == "Others"
    assert main(["import", "esconv", str(src), "-o", str(out), "--keep-unknown"]) == 0
    kept = [Dialog.model_validate_json(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert kept[1].turns[3].action.motivation == "Humour"
    capsys.readouterr()


def test_chain_on_an_esconv_import_makes_sac_turns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Assistant strategies and no user tags: chaining must still give SAC turns (a_motivation), and the
    SFT export must not render the annotated-style {motivation: ...} block."""
    imported = tmp_path / "es.jsonl"
    assert main(["import", "esconv", str(DATA / "failed_esconv_sample.json"), "-o", str(imported)]) == 0
    chained = tmp_path / "sac.jsonl"
    assert main(["chain", str(imported), str(chained)]) == 0
    assert chained.read_bytes() != imported.read_bytes()
    err = capsys.readouterr().err
    assert "have no user tags" in err and "state blocks are null" in err
    sft = tmp_path / "sft.jsonl"
    assert main(["convert", str(chained), str(sft), "--to", "trl-sft"]) == 0
    rows = [json.loads(x) for x in sft.read_text(encoding="utf-8").splitlines()]
    first_reply = next(m["content"] for m in rows[0]["messages"] if m["role"] == "assistant")
    assert first_reply.startswith("{u_motivation: null, u_emotion: null, u_topic: null} "
                                  "{a_motivation: Restatement or Paraphrasing,"), first_reply
    assert "{motivation:" not in sft.read_text(encoding="utf-8")
    sharegpt = tmp_path / "sac.json"
    assert main(["chain", str(imported), str(sharegpt)]) == 0
    assert main(["validate", str(sharegpt), "--format", "sharegpt-chained"]) == 0
    capsys.readouterr()

"""Self-play transcripts (plain, full/, converted) and preference files (original, LLaMA-Factory, TRL)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sage_dialog.core.errors import UserError
from sage_dialog.core.schema import Dialog, PreferencePair, SearchNode, Tags, Turn
from sage_dialog.formats import check_file, convert_file, detect_format, preferences, transcripts

FIX = Path(__file__).parent / "fixtures"
TR = FIX / "transcripts"
NAME = "I_failed_my_driving_test_again..txt"


def test_transcript_name() -> None:
    assert transcripts.transcript_name("I failed my driving test again.") == NAME
    assert transcripts.transcript_name("one two three four five six seven eight nine ten") == (
        "one_two_three_four_five_six_seven_eight.txt")
    assert transcripts.transcript_name("a/b  c") == "a-b_c.txt"


@pytest.mark.parametrize("variant,folder", [("plain", TR / "plain"), ("full", TR / "plain" / "full"),
                                            ("converted", TR / "converted")])
def test_transcript_read_write_byte_equal(variant: transcripts.Variant, folder: Path, tmp_path: Path) -> None:
    dialogs = transcripts.read_transcript_dir(folder, variant)
    assert len(dialogs) == 1 and dialogs[0].id == NAME[:-4]
    assert transcripts.detect_variant(folder / NAME) == variant
    transcripts.write_transcript_dir(tmp_path, dialogs, variant)
    assert (tmp_path / NAME).read_bytes() == (folder / NAME).read_bytes()
    assert transcripts.read_transcript_dir(tmp_path, variant) == dialogs


def test_full_transcript_keeps_dropped_candidates() -> None:
    d = transcripts.read_transcript(TR / "plain" / "full" / NAME)
    plain = transcripts.read_transcript(TR / "plain" / NAME)
    assert d.turns == plain.turns  # the kept path is the plain transcript
    dropped = transcripts.dropped_from_meta(d)
    assert sorted(dropped) == [1, 3] and len(dropped[3]) == 2
    assert dropped[1][0].action == Tags(motivation="joke", emotion="playful", topics=["roads"])
    assert dropped[1][0].text == "Haha, roads are overrated anyway!"


def test_converted_is_the_original_conversion_of_plain() -> None:
    text = (TR / "plain" / NAME).read_text(encoding="utf-8")
    assert transcripts.convert_transcript_text(text) == (TR / "converted" / NAME).read_text(encoding="utf-8")
    full = (TR / "plain" / "full" / NAME).read_text(encoding="utf-8")
    assert transcripts.convert_transcript_text(full) == (TR / "converted" / NAME).read_text(encoding="utf-8")


def test_long_key_spelling_is_read_and_short_keys_written() -> None:
    d = transcripts.read_transcript(TR / "long_keys.txt")
    assert d.turns[1].state == Tags(motivation="sharing news", emotion="excited")
    assert d.turns[1].action == Tags(motivation="ask", emotion="curious")
    assert transcripts.render_transcript(d).splitlines()[1].startswith("🤖: {u_motivation: sharing news, u_emotion")


def test_write_transcripts_layout_and_tree(tmp_path: Path) -> None:
    nodes = [
        SearchNode(id="r", tree="t1", parent=None, depth=0, role="user", text="Hello there"),
        SearchNode(id="a1", tree="t1", parent="r", depth=1, role="assistant", text="Hi!", kept=True,
                   action=Tags(motivation="greet")),
        SearchNode(id="a2", tree="t1", parent="r", depth=1, role="assistant", text="Go away", kept=False),
        SearchNode(id="u2", tree="t1", parent="a1", depth=2, role="user", text="How are you?"),
    ]
    d, dropped = transcripts.dialog_from_tree(nodes)
    assert [t.text for t in d.turns] == ["Hello there", "Hi!", "How are you?"]
    assert [t.text for t in dropped[1]] == ["Go away"]
    assert transcripts.write_transcripts(tmp_path, [(d, dropped)]) == 1
    full = (tmp_path / "full" / "Hello_there.txt").read_text(encoding="utf-8").splitlines()
    assert full[1].startswith("🤖✅: ") and full[2].startswith("\t🤖❌: ") and full[2].endswith("Go away")
    assert detect_format(tmp_path) == "transcripts"
    assert check_file(tmp_path / "full", "transcripts-full")[1] == []


_line = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=30)
_safe = _line.filter(lambda s: s.strip() == s and not s.startswith(("{", "🧑", "🤖", "user:", "assistant:")))


@settings(max_examples=60, deadline=None)
@given(st.lists(_safe, min_size=1, max_size=6))
def test_transcript_round_trip_property(texts: list[str]) -> None:
    turns = [Turn(role="user" if i % 2 == 0 else "assistant", text=t,
                  action=Tags(motivation="m") if i % 2 else None) for i, t in enumerate(texts)]
    d = Dialog(id="x", turns=turns)
    for variant in ("plain", "full"):
        back = transcripts.parse_transcript(transcripts.render_transcript(d, variant), "x", variant=variant)
        assert back == d
    conv = transcripts.parse_transcript(transcripts.render_transcript(d, "converted"), "x", variant="converted")
    assert [t.role for t in conv.turns] == [t.role for t in turns]


def test_transcript_problems_name_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "t"
    bad.mkdir()
    (bad / "a.txt").write_text("🤖: hi\n🧑‍💻: {motivation: x, emotion\n", encoding="utf-8")
    problems, n = transcripts.check_transcript_dir(bad)
    assert n == 1
    assert problems == [
        f"{bad / 'a.txt'}: record 2: field text: tag block does not parse: '{{motivation: x, emotion'",
        f"{bad / 'a.txt'}: record 1: field role: expected user, got assistant (turns alternate starting with user)",
    ]


# ---------------------------------------------------------------------------------------------
# preferences

PF = FIX / "prefs"
FILES = {"original": PF / "original.json", "llamafactory": PF / "llamafactory.json", "trl": PF / "trl.jsonl"}


@pytest.mark.parametrize("fmt", ["original", "llamafactory", "trl"])
def test_preferences_read_write_byte_equal(fmt: preferences.PrefFormat, tmp_path: Path) -> None:
    src = FILES[fmt]
    pairs = list(preferences.read_preferences(src, fmt))
    assert len(pairs) == 2
    assert pairs[1].history[-1] == Turn(role="user", text="Fourth. I am starting to think I should give up.")
    assert pairs[1].chosen.action == Tags(motivation="encourage", emotion="warm", topics=["persistence"])
    assert pairs[1].rejected.action == Tags(motivation="agree", emotion="neutral")
    out = tmp_path / src.name
    preferences.write_preferences(out, pairs, fmt)
    assert out.read_bytes() == src.read_bytes()
    assert preferences.check_preferences(out, fmt) == ([], 2)


def test_preference_forms_agree() -> None:
    got = {f: [p.model_dump(exclude={"id"}) for p in preferences.read_preferences(path, f)]  # type: ignore[arg-type]
           for f, path in FILES.items()}
    assert got["original"] == got["llamafactory"] == got["trl"]


def test_llamafactory_ranking_folder(tmp_path: Path) -> None:
    pairs = list(preferences.read_preferences(FILES["trl"], "trl"))
    out = tmp_path / "lf"
    preferences.write_preferences(out, pairs, "llamafactory")
    info = json.loads((out / "dataset_info.json").read_text())
    assert info == {"comparison_data": {"file_name": "comparison_data.json", "formatting": "sharegpt",
                                        "ranking": True, "columns": {"messages": "conversations",
                                                                     "chosen": "chosen", "rejected": "rejected"}}}
    assert detect_format(out) == "prefs-llamafactory"
    assert [p.chosen for p in preferences.read_preferences(out, "llamafactory")] == [p.chosen for p in pairs]


_w = st.text(alphabet="abcdefgh ", min_size=1, max_size=10).map(lambda s: " ".join(s.split())).filter(bool)
_txt = st.text(min_size=1, max_size=30).filter(lambda s: s.strip() == s and not s.startswith("{"))
_act = st.builds(Tags, motivation=st.none() | _w, emotion=st.none() | _w, topics=st.none() | st.lists(_w, max_size=2))


@st.composite
def pairs_st(draw: st.DrawFn) -> PreferencePair:
    n = draw(st.integers(0, 3))
    hist: list[Turn] = []
    if draw(st.booleans()):
        hist.append(Turn(role="system", text=draw(_txt)))
    for _ in range(n):
        hist += [Turn(role="user", text=draw(_txt)),
                 Turn(role="assistant", text=draw(_txt), state=draw(_act), action=draw(_act))]
    hist.append(Turn(role="user", text=draw(_txt)))
    a = Turn(role="assistant", text=draw(_txt), state=draw(_act), action=draw(_act))
    b = Turn(role="assistant", text=draw(_txt), action=draw(_act))
    return PreferencePair(id="p", history=hist, chosen=a, rejected=b)


@settings(max_examples=60, deadline=None)
@given(pairs_st())
def test_preference_round_trip_property(p: PreferencePair) -> None:
    for to, frm in ((preferences.pair_to_original, preferences.original_to_pair),
                    (preferences.pair_to_llamafactory, preferences.llamafactory_to_pair),
                    (preferences.pair_to_trl, preferences.trl_to_pair)):
        assert frm(to(p), "p") == p


def test_convert_pairs_between_forms(tmp_path: Path) -> None:
    jl = tmp_path / "pairs.jsonl"
    assert convert_file(FILES["original"], jl) == 2
    assert detect_format(jl) == "pairs"
    trl = tmp_path / "trl.jsonl"
    convert_file(jl, trl, dst_format="prefs-trl")
    assert trl.read_bytes() == FILES["trl"].read_bytes()
    assert detect_format(trl) == "prefs-trl"
    with pytest.raises(UserError, match="cannot convert"):
        convert_file(jl, tmp_path / "x.json", dst_format="sharegpt")


def test_preference_problems(tmp_path: Path) -> None:
    data = json.loads(FILES["llamafactory"].read_text())
    data[1]["conversations"].pop()
    data[0]["chosen"]["from"] = "human"
    p = tmp_path / "lf.json"
    p.write_text(json.dumps(data))
    problems, n = preferences.check_preferences(p, "llamafactory")
    assert n == 2
    assert problems == [
        f"{p}: record 1: field chosen.from: unexpected speaker 'human' (expected gpt)",
        f"{p}: record 2: field conversations: must end with a human turn",
    ]


def test_user_lines_with_tags_from_the_original_simulator() -> None:
    text = ("🧑‍💻: I lost my keys.\n"
            "🤖: {user_motivation: venting, user_emotion: annoyed} {assistant_motivation: help, assistant_emotion: calm}"
            " Where did you last see them?\n"
            "🧑‍💻: {user_motivation: answer, user_emotion: neutral} {assistant_motivation: inform, assistant_emotion: tired}"
            " In the car, I think.\n")
    d = transcripts.parse_transcript(text, "k")
    assert d.turns[2].text == "In the car, I think."
    assert d.turns[2].state == Tags(motivation="answer", emotion="neutral")
    assert d.turns[2].action == Tags(motivation="inform", emotion="tired")
    again = transcripts.parse_transcript(transcripts.render_transcript(d), "k")
    assert again == d
    assert transcripts.render_transcript(d, "converted").splitlines()[2] == "user: In the car, I think."
    assert transcripts.convert_transcript_text(text).splitlines()[2] == "user: In the car, I think."

"""ShareGPT files of the original scripts, chaining, TRL messages and the LLaMA-Factory SFT export."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sage_dialog.core import sac
from sage_dialog.core.errors import UserError
from sage_dialog.core.schema import Dialog, Tags, Turn
from sage_dialog.formats import convert_file, detect_format, llamafactory, sharegpt, trl
from sage_dialog.stages.chain import chain_dialog, chain_file

FIX = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("name", ["raw.json", "annotated.json", "chained.json"])
def test_read_write_byte_equal(name: str, tmp_path: Path) -> None:
    dialogs = sharegpt.read_sharegpt(FIX / name)
    assert [d.id for d in dialogs] == ["identity_1", "identity_2"]
    out = tmp_path / name
    sharegpt.write_sharegpt(out, dialogs)
    assert out.read_bytes() == (FIX / name).read_bytes()
    assert sharegpt.read_sharegpt(out) == dialogs


def test_annotated_turns_carry_their_own_tags() -> None:
    d = sharegpt.read_sharegpt(FIX / "annotated.json")[0]
    assert d.turns[0].role == "user" and d.turns[0].text == "I got the job!"
    assert d.turns[0].state == Tags(motivation="sharing news", emotion="excited", topics=["job", "interview"])
    assert d.turns[0].action is None
    assert d.turns[1].action == Tags(motivation="congratulate", emotion="happy", topics=["job"])
    assert d.turns[1].state is None
    assert d.turns[3].text == "Nerves are normal {really}. What worries you most?"  # braces in text kept


def test_chain_matches_original_on_fixture(tmp_path: Path) -> None:
    out = tmp_path / "chained.json"
    assert chain_file(FIX / "annotated.json", out) == 2
    assert out.read_bytes() == (FIX / "chained.json").read_bytes()
    chained = sharegpt.read_sharegpt(out)
    assert chained[0].turns[1].state is not None and chained[0].turns[0].state is None


def _reference_chain(records: list[dict]) -> list[dict]:
    """The original scripts' string surgery: rename keys, move the human block before the gpt turn."""
    out = []
    for r in records:
        conv, pending = [], ""
        for t in r["conversations"]:
            m = re.match(r"(\{[^{}]*\}) (.*)", t["value"], re.S)
            assert m
            block, text = m.groups()
            if t["from"] == "human":
                pending = re.sub(r"([{ ])(motivation|emotion|topic):", r"\1u_\2:", block)
                conv.append({"from": "human", "value": text})
            else:
                own = re.sub(r"([{ ])(motivation|emotion|topic):", r"\1a_\2:", block)
                conv.append({"from": "gpt", "value": f"{pending} {own} {text}"})
        out.append({"id": r["id"], "conversations": conv})
    return out


_word = st.text(alphabet="abcdefghij xyz", min_size=1, max_size=12).map(lambda s: " ".join(s.split())).filter(bool)
_tags = st.builds(Tags, motivation=st.none() | _word, emotion=st.none() | _word,
                  topics=st.none() | st.lists(_word, max_size=3))
_text = st.text(min_size=1, max_size=40).filter(lambda s: s.strip() == s and s and not s.startswith("{"))


@st.composite
def annotated_dialogs(draw: st.DrawFn) -> Dialog:
    n = draw(st.integers(1, 6))
    turns = []
    for i in range(n):
        role = "user" if i % 2 == 0 else "assistant"
        tags = draw(_tags)
        turns.append(Turn(role=role, text=draw(_text), state=tags if role == "user" else None,
                          action=tags if role == "assistant" else None))
    return Dialog(id=f"identity_{draw(st.integers(0, 999))}", turns=turns)


@settings(max_examples=60, deadline=None)
@given(st.lists(annotated_dialogs(), min_size=1, max_size=3))
def test_chain_equals_reference_string_surgery(dialogs: list[Dialog]) -> None:
    annotated = [sharegpt.dialog_to_record(d, "annotated") for d in dialogs]
    ours = [sharegpt.dialog_to_record(chain_dialog(d), "chained") for d in dialogs]
    assert ours == _reference_chain(annotated)


@settings(max_examples=60, deadline=None)
@given(st.lists(annotated_dialogs(), min_size=1, max_size=3))
def test_sharegpt_and_trl_round_trip(dialogs: list[Dialog]) -> None:
    for d in dialogs:
        for style in ("annotated", "chained"):
            dd = d if style == "annotated" else chain_dialog(d)
            rec = sharegpt.dialog_to_record(dd, style)
            assert sharegpt.record_problems("f", 1, rec, style=style) == []
            assert sharegpt.record_to_dialog(rec) == dd
            msgs = trl.dialog_to_messages(dd, style)
            assert trl.messages_to_dialog(msgs, dd.id) == dd


def test_chain_is_idempotent_and_keeps_trailing_user_text() -> None:
    d = sharegpt.read_sharegpt(FIX / "annotated.json")[1]
    c = chain_dialog(d)
    assert c.turns[-1] == Turn(role="user", text="Fourth.")
    assert chain_dialog(c) == c


def test_sort_by_id_number() -> None:
    ds = [Dialog(id=i, turns=[Turn(role="user", text="x")]) for i in ("identity_10", "x", "identity_2", "a_1")]
    assert [d.id for d in sharegpt.sort_by_id(ds)] == ["a_1", "identity_2", "identity_10", "x"]


def test_skip_invalid_warns_and_drops(tmp_path: Path) -> None:
    data = json.loads((FIX / "raw.json").read_text())
    data[0]["conversations"][1]["from"] = "human"
    data[1]["conversations"][0]["weight"] = 1
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(data))
    with pytest.raises(UserError) as e:
        sharegpt.read_sharegpt(p)
    assert len(e.value.problems) == 2
    assert "record 1 (identity_1): field conversations[1].from: expected gpt, got human" in e.value.problems[0]
    warned: list[str] = []
    assert sharegpt.read_sharegpt(p, skip_invalid=True, warn=warned.append) == []
    assert len(warned) == 2 and all(w.startswith("dropped: ") for w in warned)


def test_trl_file_round_trip(tmp_path: Path) -> None:
    dialogs = [chain_dialog(d) for d in sharegpt.read_sharegpt(FIX / "annotated.json")]
    p = tmp_path / "sft.jsonl"
    assert trl.write_trl_sft(p, dialogs) == 2
    rows = [json.loads(line) for line in p.read_text().splitlines()]
    assert rows[0]["messages"][0] == {"role": "user", "content": "I got the job!"}
    assert rows[0]["messages"][1]["content"].startswith("{u_motivation: sharing news")
    back = list(trl.read_trl_sft(p))
    assert [b.turns for b in back] == [d.turns for d in dialogs]
    assert detect_format(p) == "trl-sft"
    assert trl.check_trl_sft(p) == ([], 2)


def test_llamafactory_export(tmp_path: Path) -> None:
    dialogs = [chain_dialog(d) for d in sharegpt.read_sharegpt(FIX / "annotated.json")]
    out = tmp_path / "lf"
    llamafactory.write_sft_export(out, dialogs)
    info = json.loads((out / "dataset_info.json").read_text())
    assert info == {"data_mix": {"file_name": "mix.json", "formatting": "sharegpt",
                                 "columns": {"messages": "conversations"}}}
    # the second fixture dialog ends on a human turn: LLaMA-Factory would skip it, so it is trimmed
    want = json.loads((FIX / "chained.json").read_text())
    want[1]["conversations"].pop()
    assert json.loads((out / "mix.json").read_text()) == want
    back = llamafactory.read_sft_export(out)
    assert back[0] == dialogs[0] and back[1].turns == dialogs[1].turns[:-1]
    assert detect_format(out) == "llamafactory-sft"
    # other datasets in an existing dataset_info.json are kept
    llamafactory.update_dataset_info(out, "other", {"file_name": "o.json"})
    llamafactory.write_sft_export(out, dialogs[:1])
    assert set(json.loads((out / "dataset_info.json").read_text())) == {"data_mix", "other"}


def test_convert_between_dialog_formats(tmp_path: Path) -> None:
    src = FIX / "chained.json"
    jl = tmp_path / "d.jsonl"
    assert convert_file(src, jl) == 2
    assert detect_format(jl) == "dialogs"
    back = tmp_path / "back.json"
    convert_file(jl, back)
    assert back.read_bytes() == src.read_bytes()
    raw = tmp_path / "raw.json"
    convert_file(src, raw, dst_format="sharegpt-raw")
    assert raw.read_bytes() == (FIX / "raw.json").read_bytes()
    lf = tmp_path / "lf"
    assert convert_file(jl, lf, dst_format="llamafactory-sft") == 2
    want = json.loads(src.read_text())
    want[1]["conversations"].pop()  # ends on a human turn: trimmed for LLaMA-Factory
    assert json.loads((lf / "mix.json").read_text()) == want


def test_sac_text_of_chained_turn_parses() -> None:
    d = sharegpt.read_sharegpt(FIX / "chained.json")[0]
    text = sac.render_turn(d.turns[1].text, state=d.turns[1].state, action=d.turns[1].action)
    assert sac.parse(text).action == d.turns[1].action

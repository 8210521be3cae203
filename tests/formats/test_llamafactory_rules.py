"""LLaMA-Factory exports checked against LLaMA-Factory's own loader rules (0.9.x), without installing it.

The rules, as ``src/llamafactory/data/converter.py`` (``SharegptDatasetConverter``) and
``data/processor/supervised.py`` / ``pairwise.py`` apply them with the default ``DatasetAttr`` tags
(role ``from``, content ``value``, user ``human``, assistant ``gpt``, observation ``observation``,
function ``function_call``, system ``system``):

* a first message with the system tag becomes the system prompt and is removed;
* message ``i`` must have a tag of ``(human, observation)`` for even ``i`` and ``(gpt, function_call)``
  for odd ``i`` ("Invalid role tag": skipped);
* SFT needs an even message count, ranking an odd one ("Invalid message count": skipped);
* ranking: ``chosen`` and ``rejected`` must have an assistant/function tag;
* SFT: prompt = all but the last message, response = the last; the supervised processor drops an
  example unless ``len(prompt) % 2 == 1 and len(response) == 1`` ("Dropped invalid example"); the
  pairwise one unless ``len(prompt) % 2 == 1 and len(response) >= 2``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sage_dialog.core.io import read_json
from sage_dialog.core.schema import Dialog, PreferencePair, Turn
from sage_dialog.formats import llamafactory, preferences
from sage_dialog.stages import mix

ODD_TAGS = ("human", "observation")
EVEN_TAGS = ("gpt", "function_call")


def lf_accepts(example: dict[str, Any], *, ranking: bool, messages: str = "conversations") -> bool:
    """True when LLaMA-Factory 0.9.x's sharegpt converter + processor keep ``example``."""
    msgs = example[messages]
    if msgs and msgs[0]["from"] == "system":
        msgs = msgs[1:]
    for i, m in enumerate(msgs):
        if m["from"] not in (ODD_TAGS, EVEN_TAGS)[i % 2]:
            return False  # Invalid role tag
    if (not ranking and len(msgs) % 2 != 0) or (ranking and len(msgs) % 2 == 0):
        return False  # Invalid message count
    if ranking:
        if example["chosen"]["from"] not in EVEN_TAGS or example["rejected"]["from"] not in EVEN_TAGS:
            return False
        prompt, response = msgs, [example["chosen"], example["rejected"]]
        return len(prompt) % 2 == 1 and len(response) >= 2
    prompt, response = msgs[:-1], msgs[-1:]
    return len(prompt) % 2 == 1 and len(response) == 1


def test_the_rules_reject_what_llamafactory_rejects() -> None:
    h, g = {"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}
    assert lf_accepts({"conversations": [h, g]}, ranking=False)
    assert lf_accepts({"conversations": [{"from": "system", "value": "s"}, h, g]}, ranking=False)
    assert not lf_accepts({"conversations": [h, g, h]}, ranking=False)  # the 6 of 95
    assert not lf_accepts({"conversations": [g, h]}, ranking=False)
    assert not lf_accepts({"conversations": []}, ranking=False)
    assert lf_accepts({"conversations": [h], "chosen": g, "rejected": g}, ranking=True)
    assert not lf_accepts({"conversations": [h, g], "chosen": g, "rejected": g}, ranking=True)


def _turn(role: str, text: str) -> Turn:
    return Turn(role=role, text=text)  # type: ignore[arg-type]


def test_sft_export_keeps_every_dialog_llamafactory_can_train_on(tmp_path: Path) -> None:
    dialogs = [
        Dialog(id="even", turns=[_turn("user", "hi"), _turn("assistant", "hello")]),
        Dialog(id="odd", turns=[_turn("user", "hi"), _turn("assistant", "hello"), _turn("user", "bye")]),
        Dialog(id="sys", turns=[_turn("system", "be kind"), _turn("user", "hi"), _turn("assistant", "yo"),
                                _turn("user", "so?"), _turn("user", "hello?")]),
        Dialog(id="gpt_first", turns=[_turn("assistant", "welcome"), _turn("user", "hi"), _turn("assistant", "hey")]),
        Dialog(id="lonely", turns=[_turn("user", "anyone?")]),
        Dialog(id="jumbled", turns=[_turn("user", "a"), _turn("user", "b"), _turn("assistant", "c")]),
    ]
    rep = llamafactory.write_sft_export(tmp_path / "lf", dialogs)
    records = read_json(tmp_path / "lf" / "mix.json")
    assert [r["id"] for r in records] == ["even", "odd", "sys", "gpt_first"]
    assert all(lf_accepts(r, ranking=False) for r in records)
    assert rep.written == 4 and rep.trimmed == 3 and rep.turns_trimmed == 4
    assert rep.left_out == ["lonely", "jumbled"]
    assert [t["from"] for t in records[2]["conversations"]] == ["system", "human", "gpt"]
    # what LLaMA-Factory reads back is what sage-dialog reads back
    assert [len(d.turns) for d in llamafactory.read_sft_export(tmp_path / "lf")] == [2, 2, 3, 2]


def test_mix_reports_what_the_llamafactory_export_trimmed(tmp_path: Path) -> None:
    h = lambda v: {"from": "human", "value": v}  # noqa: E731
    g = lambda v: {"from": "gpt", "value": v}  # noqa: E731
    data = [{"id": f"d_{i}", "conversations": [h("hi"), g(f"hello {i}")] + ([h("bye")] if i % 3 == 0 else [])}
            for i in range(9)]
    (tmp_path / "a.json").write_text(json.dumps(data))
    (tmp_path / "spec.json").write_text(json.dumps({"a.json": {"prompt": "", "size": 9}}))
    warnings = mix.run(mix.Settings(valid_size=3, seed=1), inputs=mix.Inputs(spec=tmp_path / "spec.json"),
                       out=tmp_path / "out").warnings
    lf = tmp_path / "out" / "llamafactory"
    info = read_json(lf / "dataset_info.json")
    n = 0
    for entry in info.values():
        for r in read_json(lf / entry["file_name"]):
            assert lf_accepts(r, ranking=False), r
            n += 1
    assert n == 9  # nothing left out: the three odd dialogs lost their last human turn only
    s = read_json(tmp_path / "out" / "manifest.json")["summary"]
    assert s["odd_length"] == 3
    lfs = s["llamafactory"]
    assert lfs["train"]["trimmed_dialogs"] + lfs["valid"]["trimmed_dialogs"] == 3
    assert lfs["train"]["written"] + lfs["valid"]["written"] == 9
    assert any("trimmed to end on a gpt turn" in w for w in warnings)
    # the TRL rows keep every turn
    assert sum(len(json.loads(x)["messages"]) for x in (tmp_path / "out" / "train.jsonl").read_text().splitlines()) \
        + sum(len(json.loads(x)["messages"]) for x in (tmp_path / "out" / "valid.jsonl").read_text().splitlines()) == 21


def test_preference_export_meets_the_ranking_rules(tmp_path: Path) -> None:
    pairs = [
        PreferencePair(id="p1", history=[_turn("user", "hi")], chosen=_turn("assistant", "hello"),
                       rejected=_turn("assistant", "go away")),
        PreferencePair(id="p2", history=[_turn("system", "be kind"), _turn("user", "hi"), _turn("assistant", "hey"),
                                         _turn("user", "joke?")],
                       chosen=_turn("assistant", "knock knock"), rejected=_turn("assistant", "no")),
    ]
    preferences.write_preferences(tmp_path / "prefs", pairs, "llamafactory")
    _, entry = llamafactory.find_entry(tmp_path / "prefs", ranking=True)
    records = read_json(tmp_path / "prefs" / entry["file_name"])
    assert len(records) == 2 and all(lf_accepts(r, ranking=True) for r in records)

"""Mixing: the original data_spec rules (checked against a reference written from FORMATS.md section 2),
blending, proportions, dedup, the validation split and the trainer-ready outputs."""

from __future__ import annotations

import copy
import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from sage_dialog.cli import main
from sage_dialog.core import sac
from sage_dialog.core.io import read_json, write_jsonl
from sage_dialog.core.schema import Dialog, Tags, Turn
from sage_dialog.stages import mix


def h(v: str) -> dict[str, str]:
    return {"from": "human", "value": v}


def g(v: str) -> dict[str, str]:
    return {"from": "gpt", "value": v}


def chained(reply: str, mot: str) -> str:
    return sac.render_turn(reply, state=Tags(motivation="venting", emotion="sad", topics=["work"]),
                           action=Tags(motivation=mot, emotion="calm", topics=["work"]))


def reference_mix(spec_path: Path, seed: int = 0) -> list[dict[str, Any]]:
    """The original scripts' rules, as FORMATS.md section 2 states them."""
    spec = json.loads(spec_path.read_text())
    out = []
    for name, s in spec.items():
        data = json.loads((spec_path.parent / name).read_text())[: s["size"]]
        for d in copy.deepcopy(data):
            conv = d.get("conversations", [])
            for t in conv:
                if t.get("from") == "gpt":
                    t["value"] = s["prompt"] + t["value"]
            ok = bool(conv) and all(set(t) == {"from", "value"} for t in conv) and all(
                t["from"] == ("human" if i % 2 == 0 else "gpt") for i, t in enumerate(conv))
            if ok:
                out.append(d)
    random.Random(seed).shuffle(out)
    return out


def conv_key(conv: list[dict[str, str]]) -> str:
    return json.dumps([[t["from"], t["value"]] for t in conv])


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    a = [
        {"id": "identity_0", "conversations": [h("I lost my job."), g(chained("That is hard.", "comfort")),
                                                h("Yes."), g(chained("Want to talk?", "question"))]},
        {"id": "identity_1", "conversations": [h("Hi"), g("Hello!"), h("Bye")]},                   # odd length
        {"id": "identity_2", "conversations": [g("I start"), h("wrong order")]},                    # bad start
        {"id": "identity_3", "conversations": []},                                                  # empty
        {"id": "identity_4", "conversations": [h("x"), {"from": "gpt", "value": "y", "weight": 1}]},  # extra key
        {"id": "identity_5", "conversations": [h("My dog is sick."), g(chained("Oh no.", "empathy"))]},
        {"id": "identity_6", "conversations": [h("I lost my job."), g(chained("That is hard.", "comfort")),
                                                h("Yes."), g(chained("Want to talk?", "question"))]},  # dup of 0
        {"id": "identity_7", "conversations": [h("beyond size"), g("not taken")]},
    ]
    b = [
        {"id": "b_0", "conversations": [h("Tell me a joke"), g("Why did the chicken cross the road?")]},
        {"id": "b_1", "conversations": [h("Again"), g("Knock knock."), h("Who is there?"), g("Lettuce.")]},
        {"id": "b_2", "conversations": [h("Hi"), h("hello?")]},                                    # two humans
        {"id": "b_3", "conversations": [h("Bored"), g("Let's play a game."), h("ok"), g("Pick a number.")]},
    ]
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.json").write_text(json.dumps(b))
    p = tmp_path / "data_spec.json"
    p.write_text(json.dumps({"a.json": {"prompt": "", "size": 7},
                             "sub/b.json": {"prompt": "[humor] ", "size": 10}}))
    return p


def read_outputs(out: Path) -> tuple[list[list[dict[str, str]]], list[list[dict[str, str]]]]:
    """Conversations of mix.json and of train.jsonl (as from/value turns)."""
    lf = read_json(out / "llamafactory" / "mix.json")
    trl = [json.loads(line)["messages"] for line in (out / "train.jsonl").read_text().splitlines()]
    names = {"user": "human", "assistant": "gpt"}
    return ([r["conversations"] for r in lf],
            [[{"from": names[m["role"]], "value": m["content"]} for m in msgs] for msgs in trl])


def test_mix_matches_original_rules(spec: Path, tmp_path: Path) -> None:
    warnings = mix.run(mix.Settings(dedup=False), inputs=mix.Inputs(spec=spec), out=tmp_path / "out").warnings
    ref = Counter(conv_key(d["conversations"]) for d in reference_mix(spec))
    lf, trl = read_outputs(tmp_path / "out")
    assert Counter(conv_key(c) for c in trl) == ref
    # LLaMA-Factory gets the same dialogs, each ending on a gpt turn (its loader skips the others)
    trimmed = reference_mix(spec)
    for d in trimmed:
        while d["conversations"][-1]["from"] == "human":
            d["conversations"].pop()
    assert Counter(conv_key(c) for c in lf) == Counter(conv_key(d["conversations"]) for d in trimmed)
    assert sum(ref.values()) == 7  # 0, 1, 5, 6 of a; 0, 1, 3 of b
    # the prompt is prefixed to gpt turns only
    assert any(c[1]["value"] == "[humor] Why did the chicken cross the road?" for c in lf)
    # every dropped dialog is named in a warning
    dropped = {"identity_2", "identity_3", "identity_4", "b_2"}
    for rid in dropped:
        assert any(f"({rid})" in w for w in warnings), (rid, warnings)
    assert not any("identity_7" in w for w in warnings)  # beyond size: not taken, not warned about
    assert any("1 dialogs ending on a human turn were trimmed" in w for w in warnings)  # identity_1
    man = read_json(tmp_path / "out" / "manifest.json")
    assert man["summary"]["odd_length"] == 1
    assert man["summary"]["dropped_invalid"] == 4 and man["summary"]["files"][str(spec.parent / "a.json")]["taken"] == 7


def test_mix_seed_order_and_dedup(spec: Path, tmp_path: Path) -> None:
    outs = []
    for i, seed in enumerate((1, 1, 2)):
        mix.run(mix.Settings(seed=seed), inputs=mix.Inputs(spec=spec), out=tmp_path / f"o{i}")
        outs.append(read_outputs(tmp_path / f"o{i}")[0])
    assert outs[0] == outs[1] and outs[0] != outs[2]
    assert Counter(map(conv_key, outs[0])) == Counter(map(conv_key, outs[2]))
    ref = reference_mix(spec)
    assert len(outs[0]) == len(ref) - 1  # identity_6 duplicates identity_0
    assert len(set(map(conv_key, outs[0]))) == len(outs[0])


def test_mix_blend(spec: Path, tmp_path: Path) -> None:
    mix.run(mix.Settings(blend=2, dedup=False, seed=5), inputs=mix.Inputs(spec=spec), out=tmp_path / "out")
    by_id = {d["id"]: d["conversations"] for d in reference_mix(spec)}
    cut = {k: v[: len(v) - len(v) % 2] for k, v in by_id.items()}
    blended = read_json(tmp_path / "out" / "llamafactory" / "mix.json")
    assert sorted(r["id"].split("+")[0] for r in blended) == sorted(by_id)
    for r in blended:
        ids = r["id"].split("+")
        assert len(ids) == 3 and len(set(ids)) == 3
        assert r["conversations"] == cut[ids[0]] + cut[ids[1]] + cut[ids[2]]
        assert len(r["conversations"]) % 2 == 0


def test_mix_valid_split_and_llamafactory_schema(spec: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["mix", str(spec), "-o", str(out), "--valid-size", "2", "--no-dedup"]) == 0
    train = [json.loads(x) for x in (out / "train.jsonl").read_text().splitlines()]
    valid = [json.loads(x) for x in (out / "valid.jsonl").read_text().splitlines()]
    assert len(valid) == 2 and len(train) == 5
    info = read_json(out / "llamafactory" / "dataset_info.json")
    # LLaMA-Factory's documented sharegpt schema (data/README.md): default tags from/value, human/gpt
    assert info["data_mix"] == {"file_name": "mix.json", "formatting": "sharegpt", "columns": {"messages": "conversations"}}
    assert info["data_mix_valid"]["file_name"] == "mix_valid.json"
    for name in ("mix.json", "mix_valid.json"):
        for rec in read_json(out / "llamafactory" / name):
            roles = [t["from"] for t in rec["conversations"]]
            assert roles[0] == "human" and all(r == ("human", "gpt")[i % 2] for i, r in enumerate(roles))
            assert all(set(t) == {"from", "value"} for t in rec["conversations"])
    # re-mixing without a split leaves no stale validation files behind
    assert main(["mix", str(spec), "-o", str(out)]) == 0
    assert not (out / "valid.jsonl").exists() and not (out / "llamafactory" / "mix_valid.json").exists()
    assert "data_mix_valid" not in read_json(out / "llamafactory" / "dataset_info.json")


def test_mix_proportions_and_jsonl_input(tmp_path: Path) -> None:
    dialogs = [Dialog(id=f"d{i}", turns=[Turn(role="user", text=f"hello {i}"),
                                         Turn(role="assistant", text=f"hi {i}", state=Tags(motivation="greeting"),
                                              action=Tags(motivation="greeting", emotion="warm", topics=[]))])
               for i in range(10)]
    write_jsonl(tmp_path / "sac.jsonl", dialogs)
    (tmp_path / "raw.json").write_text(json.dumps([{"id": f"r_{i}", "conversations": [h(f"q{i}"), g(f"a{i}")]}
                                                   for i in range(3)]))
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"sac.jsonl": {"proportion": 0.75}, "raw.json": {"proportion": 0.25}}))
    res = mix.run(mix.Settings(total=16), inputs=mix.Inputs(spec=spec), out=tmp_path / "out")
    out, warnings = tmp_path / "out", res.warnings
    lf = read_json(out / "llamafactory" / "mix.json")
    assert len(lf) == 16
    from_sac = [r for r in lf if r["conversations"][0]["value"].startswith("hello")]
    assert len(from_sac) == 12 and len({r["id"] for r in from_sac}) == 10  # 10 usable: all once, 2 repeated
    assert any("repeating" in w for w in warnings)
    # Dialog JSONL input keeps its SAC tags in the trainer files
    assert from_sac[0]["conversations"][1]["value"].startswith("{u_motivation: greeting")
    with pytest.raises(Exception, match="--total"):
        mix.run(mix.Settings(), inputs=mix.Inputs(spec=spec), out=tmp_path / "o2")


def test_mix_command_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"missing.json": {"prompt": "", "size": 3}}))
    assert main(["mix", str(spec), "-o", str(tmp_path / "out")]) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "a.json").write_text(json.dumps([{"id": "x_1", "conversations": [h("a"), g("b")]}]))
    spec.write_text(json.dumps({"a.json": {"prompt": "", "size": "many"}}))
    assert main(["mix", str(spec), "-o", str(tmp_path / "out")]) == 2
    assert "size" in capsys.readouterr().err
    spec.write_text(json.dumps({"a.json": {"promt": ""}}))
    assert main(["mix", str(spec), "-o", str(tmp_path / "out")]) == 2
    assert "promt" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _llamafactory_data() -> tuple[Any, Any]:
    """LLaMA-Factory's own dataset parser and sharegpt converter, or skip.

    Optional tier: LLaMA-Factory pins transformers <= 5.6, so it is not a dependency here. Point
    ``SAGE_LLAMAFACTORY_SRC`` at an unpacked wheel (``pip download llamafactory --no-deps``, unzip)
    or have it importable; only ``llamafactory.data.parser`` and ``.converter`` are loaded (the
    package's ``__init__`` pulls in audio/vision libraries the loader does not need).
    """
    import importlib
    import importlib.util
    import os
    import sys
    import types

    src = os.environ.get("SAGE_LLAMAFACTORY_SRC")
    if src:
        root = Path(src) / "llamafactory"
    else:
        spec = importlib.util.find_spec("llamafactory")
        if spec is None or not spec.submodule_search_locations:
            pytest.skip("LLaMA-Factory not available (set SAGE_LLAMAFACTORY_SRC to an unpacked wheel)")
        root = Path(next(iter(spec.submodule_search_locations)))
    if not (root / "data" / "converter.py").is_file():
        pytest.skip(f"{root}: not a LLaMA-Factory package")
    os.environ.setdefault("DISABLE_VERSION_CHECK", "1")
    if "llamafactory.data.converter" not in sys.modules:
        for name, path in (("llamafactory", root), ("llamafactory.data", root / "data")):
            mod = types.ModuleType(name)
            mod.__path__ = [str(path)]
            sys.modules[name] = mod
    try:
        parser = importlib.import_module("llamafactory.data.parser")
        converter = importlib.import_module("llamafactory.data.converter")
    except ImportError as e:  # pragma: no cover - depends on the installed version
        pytest.skip(f"LLaMA-Factory's data modules do not import here: {e}")
    return parser, converter


def test_llamafactory_loader_reads_the_export(spec: Path, tmp_path: Path) -> None:
    parser, converter = _llamafactory_data()
    out = tmp_path / "out"
    warnings = mix.run(mix.Settings(valid_size=1, dedup=False), inputs=mix.Inputs(spec=spec), out=out).warnings
    assert any("trimmed to end on a gpt turn" in w for w in warnings)  # identity_1 ends on a human turn
    lf = out / "llamafactory"
    for name, file in (("data_mix", "mix.json"), ("data_mix_valid", "mix_valid.json")):
        (attr,) = parser.get_dataset_list([name], str(lf))
        assert attr.formatting == "sharegpt" and attr.load_from == "file" and attr.dataset_name == file
        conv = converter.get_dataset_converter(attr.formatting, attr, None)
        for rec in read_json(lf / file):
            row = conv(rec)
            # a skipped ("abnormal") example comes back with empty prompt and response
            assert row["_prompt"] and row["_response"], rec["id"]
            got = [m["content"] for m in row["_prompt"] + row["_response"]]
            assert got == [t["value"] for t in rec["conversations"]]
            assert [m["role"] for m in row["_prompt"]][::2] == ["user"] * ((len(got) + 1) // 2)


def test_mix_reads_other_dialog_formats(spec: Path, tmp_path: Path) -> None:
    first = tmp_path / "first"
    mix.run(mix.Settings(dedup=False, shuffle=False), inputs=mix.Inputs(spec=spec), out=first)
    (tmp_path / "ed.csv").write_text((Path(__file__).parent / "data" / "ed_sample.csv").read_text())
    spec2 = tmp_path / "spec2.json"
    spec2.write_text(json.dumps({"first/train.jsonl": {"size": 2}, "first/llamafactory": {"prompt": "> "},
                                 "ed.csv": {}}))
    out = tmp_path / "second"
    mix.run(mix.Settings(dedup=False, shuffle=False), inputs=mix.Inputs(spec=spec2), out=out)
    lf = read_json(out / "llamafactory" / "mix.json")
    trl_rows = [json.loads(x)["messages"] for x in (first / "train.jsonl").read_text().splitlines()]
    assert len(lf) == 2 + 7 + 3  # two TRL rows, the whole first export, the three ED conversations
    assert [r["conversations"][0]["value"] for r in lf[:2]] == [m[0]["content"] for m in trl_rows[:2]]
    assert all(t["value"].startswith("> ") for r in lf[2:9] for t in r["conversations"] if t["from"] == "gpt")
    assert lf[9]["conversations"][0]["value"].startswith("I remember going to the fireworks")
    bad = tmp_path / "spec3.json"
    (tmp_path / "p.jsonl").write_text('{"v": 1, "kind": "pair", "id": "x"}\n')
    bad.write_text(json.dumps({"p.jsonl": {}}))
    with pytest.raises(Exception, match="holds no dialogs to mix"):
        mix.run(mix.Settings(), inputs=mix.Inputs(spec=bad), out=tmp_path / "o3")

"""One flag generator for every command: --config FILE and --set KEY=VALUE everywhere, unknown keys
as one-line exit-2 errors that name where they came from, options in any order, one output option."""

from __future__ import annotations

from pathlib import Path

import pytest

from sage_dialog import cli
from sage_dialog.core.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = ROOT / "configs" / "demo-sandbox.yaml"

# a command line each command accepts up to its settings (inputs need not be valid: settings come first)
MINIMAL: dict[str, list[str]] = {
    "demo": ["--list", "-o", "{tmp}/demo"],
    "run": ["{demo_config}", "--list"],
    "import": ["empathetic", "{tmp}/ed.csv", "-o", "{tmp}/ed.jsonl"],
    "annotate": ["{tmp}/in.jsonl", "-o", "{tmp}/ann.jsonl", "--annotator", "mock:"],
    "agreement": ["{tmp}/a.jsonl", "{tmp}/b.jsonl"],
    "chain": ["{tmp}/a.json", "{tmp}/b.json"],
    "mix": ["{tmp}/spec.json", "-o", "{tmp}/mix"],
    "convert": ["{tmp}/a.json", "{tmp}/b.jsonl"],
    "validate": ["{tmp}/a.json"],
    "train": ["sft", "--model", "m", "--data", "{tmp}/in.jsonl", "-o", "{tmp}/sft"],
    "export": ["{tmp}/sft", "-o", "{tmp}/merged"],
    "search": ["{tmp}/seeds.txt", "-o", "{tmp}/search", "--assistant", "mock:"],
    "trees": ["{tmp}/search"],
    "prefs": ["{tmp}/search", "-o", "{tmp}/pairs.jsonl"],
    "compare": ["--judge", "oracle", "-o", "{tmp}/cmp"],
    "eval": ["--model", "m=mock:", "--tasks", "t", "-o", "{tmp}/eval"],
    "chat": ["--model", "mock:"],
    "webui": ["--model", "mock:"],
    "serve": ["--model", "mock:"],
    "steerability": ["--model", "mock:", "--sandbox-contexts", "1", "-o", "{tmp}/steer.json"],
}


def _argv(name: str, tmp: Path, *more: str) -> list[str]:
    (tmp / "in.jsonl").touch()
    return [name, *(a.format(tmp=tmp, demo_config=DEMO_CONFIG) for a in MINIMAL[name]), *more]


def _one_line_errors(err: str) -> list[str]:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines and all(ln.startswith("error: ") for ln in lines), err
    assert "Traceback" not in err
    return lines


def test_every_command_is_listed_here() -> None:
    assert set(MINIMAL) == set(cli.COMMANDS)


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_command_takes_config_and_set(name: str) -> None:
    parser, _ = cli.build_parser(name)
    opts = parser._option_string_actions
    assert {"--config", "--set"} <= set(opts)
    assert opts["--config"].dest == "config_file" and opts["--set"].dest == "overrides"


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_an_unknown_set_key_is_a_one_line_exit_2(name: str, tmp_path: Path, capsys) -> None:
    assert cli.main(_argv(name, tmp_path, "--set", "bogus_key=1")) == 2
    lines = _one_line_errors(capsys.readouterr().err)
    assert any("bogus_key" in ln and "Extra inputs are not permitted" in ln for ln in lines), lines


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_an_unknown_key_in_the_config_file_names_the_file(name: str, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    argv = _argv(name, tmp_path)
    if name == "run":  # its config is the file itself: the demo's, plus a key no loop has
        bad.write_text(DEMO_CONFIG.read_text(encoding="utf-8") + "\nbogus_key: 1\n")
        argv = ["run", "--list"]
    else:
        bad.write_text("bogus_key: 1\n")
    assert cli.main([*argv, "--config", str(bad)]) == 2
    lines = _one_line_errors(capsys.readouterr().err)
    assert any(ln.startswith(f"error: {bad}: ") and "bogus_key" in ln for ln in lines), lines
    assert not any(ln.startswith("error: config:") for ln in lines)


def test_config_file_flags_and_set_reach_nested_search_settings(tmp_path: Path) -> None:
    from sage_dialog.commands import search as search_cmd
    from sage_dialog.commands.config_flags import config_from_args
    from sage_dialog.stages.search.stage import SearchRunConfig

    parser, _ = cli.build_parser("search")
    f = tmp_path / "search.yaml"
    f.write_text("assistant: 'mock:'\nconfig: {turns: 5, latent: {open_samples: 3, k: 6}}\n")
    ns = parser.parse_intermixed_args(["s.txt", "-o", "o", "--config", str(f), "--turns", "2", "--k-actions", "2",
                                       "--state-temperature", "0.5", "--mcts-batch", "2", "--dirichlet-weight", "0.1",
                                       "--temperature", "0.7", "--set", "config.latent.simulations=5"])
    cfg = search_cmd.config_from_args(ns)
    assert isinstance(cfg, SearchRunConfig)
    lat = cfg.config.latent
    assert (cfg.config.turns, lat.open_samples, lat.k, lat.simulations) == (2, 3, 2, 5)  # flag > file; --set
    assert (lat.state_temperature, lat.batch, lat.dirichlet_weight) == (0.5, 2, 0.1)  # once unreachable
    assert cfg.config.sampling.temperature == 0.7 and cfg.assistant == "mock:"
    ns = parser.parse_intermixed_args(["s.txt", "--assistant", "mock:", "--turns", "0"])
    with pytest.raises(UserError) as e:
        config_from_args(SearchRunConfig, ns)
    assert e.value.problems == ["--turns: Input should be greater than or equal to 1"]


def test_options_in_any_order() -> None:
    parser, _ = cli.build_parser("run")
    a = parser.parse_intermixed_args(["cfg.yaml", "--until", "sft", "rounds=2", "--list", "x.y=3"])
    b = parser.parse_intermixed_args(["--until", "sft", "--list", "cfg.yaml", "rounds=2", "x.y=3"])
    assert vars(a) == vars(b)
    assert (str(a.config_arg), a.until, a.key_values, a.list) == ("cfg.yaml", "sft", ["rounds=2", "x.y=3"], True)
    parser, _ = cli.build_parser("train")
    a = parser.parse_intermixed_args(["sft", "c.yaml", "--model", "m", "a.b=1", "-o", "o", "c.d=2"])
    b = parser.parse_intermixed_args(["--model", "m", "-o", "o", "sft", "c.yaml", "a.b=1", "c.d=2"])
    assert vars(a) == vars(b) and a.key_values == ["a.b=1", "c.d=2"]


def test_run_takes_the_config_as_positional_or_option_but_not_both(tmp_path: Path, capsys) -> None:
    assert cli.main(["run", "--list", "--config", str(DEMO_CONFIG), "rounds=1"]) == 0
    listed = capsys.readouterr().out
    assert cli.main(["run", "--list", str(DEMO_CONFIG), "--set", "rounds=1"]) == 0
    assert capsys.readouterr().out == listed
    assert cli.main(["run", str(DEMO_CONFIG), "--config", str(DEMO_CONFIG), "--list"]) == 2
    assert "give the config once" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_the_output_option_is_o_out_with_output_as_a_hidden_alias(name: str) -> None:
    parser, _ = cli.build_parser(name)
    opts = parser._option_string_actions
    if "-o" not in opts:
        assert "--out" not in opts and "--output" not in opts
        return
    assert opts["-o"] is opts["--out"] is opts["--output"]
    assert opts["-o"].option_strings == ["-o", "--out"]
    help_text = parser.format_help()
    assert "-o" in help_text and "--output" not in help_text.replace("--output-", "")


def test_demo_takes_positional_overrides_like_run(tmp_path: Path, capsys) -> None:
    assert cli.main(["demo", "--list", "-o", str(tmp_path / "d"), "--set", "rounds=2"]) == 0
    listed = capsys.readouterr().out
    assert cli.main(["demo", "rounds=2", "-o", str(tmp_path / "d"), "--list"]) == 0
    assert capsys.readouterr().out == listed
    assert cli.main(["demo", "rounds=1", "-o", str(tmp_path / "d"), "--list"]) == 0
    assert capsys.readouterr().out != listed  # the override reached the loop


def test_the_old_output_spelling_still_writes(tmp_path: Path) -> None:
    import json

    (tmp_path / "d.json").write_text(json.dumps([
        {"id": "d1", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hey"}]}]))
    (tmp_path / "spec.json").write_text(json.dumps({"d.json": {"prompt": "", "size": 1}}))
    assert cli.main(["mix", str(tmp_path / "spec.json"), "--output", str(tmp_path / "old")]) == 0
    assert cli.main(["mix", "--out", str(tmp_path / "new"), str(tmp_path / "spec.json")]) == 0
    assert (tmp_path / "old" / "train.jsonl").read_text() == (tmp_path / "new" / "train.jsonl").read_text()

"""Flags generated from the stages' config models: help from the field descriptions, --config FILE,
--set KEY=VALUE, and a flag given on the command line beating the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sage_dialog import cli
from sage_dialog.commands.config_flags import config_from_args
from sage_dialog.core.errors import UserError
from sage_dialog.stages.annotate import AnnotateConfig
from sage_dialog.stages.compare.compare import CompareConfig
from sage_dialog.stages.mix import MixConfig
from sage_dialog.stages.prefs import Settings as PrefsSettings


def _parse(name: str, argv: list[str]):
    parser, _ = cli.build_parser(name)
    return parser, parser.parse_args(argv)


@pytest.mark.parametrize(("name", "model"), [("mix", MixConfig), ("annotate", AnnotateConfig),
                                              ("prefs", PrefsSettings), ("compare", CompareConfig)])
def test_every_described_field_is_a_flag_whose_help_is_the_description(name: str, model) -> None:
    parser, _ = cli.build_parser(name)
    help_text = "".join(parser.format_help().split())  # argparse wraps lines, at hyphens too
    assert "--configFILE" in help_text and "--setKEY=VALUE" in help_text
    for field, info in model.model_fields.items():
        if info.description and field not in ("sampling", "engine"):  # engine: --ray ADDRESS or --config
            assert "".join(info.description.split()) in help_text, f"{name}: {field}"


def test_file_then_flags_then_set(tmp_path: Path) -> None:
    f = tmp_path / "mix.yaml"
    f.write_text("spec: s.json\noutput: out\nseed: 5\nvalid_fraction: 0.1\ndedup: true\n")
    _, ns = _parse("mix", ["--config", str(f), "--seed", "7", "--no-dedup", "--set", "name=x", "--set", "seed=9"])
    cfg = config_from_args(MixConfig, ns)
    assert (cfg.seed, cfg.valid_fraction, cfg.dedup, cfg.name) == (9, 0.1, False, "x")  # --set beats the flag
    _, ns = _parse("mix", ["--config", str(f), "--seed", "7"])
    assert config_from_args(MixConfig, ns).seed == 7  # the flag beats the file
    _, ns = _parse("mix", ["--config", str(f), "other.json"])
    cfg = config_from_args(MixConfig, ns)
    assert (cfg.spec, cfg.seed, cfg.blend) == (Path("other.json"), 5, 0)  # a positional beats the file too
    _, ns = _parse("mix", ["s.json", "-o", "o", "--blend"])
    assert config_from_args(MixConfig, ns).blend == 2  # --blend alone: the original's 2


def test_key_value_flags_and_their_errors() -> None:
    _, ns = _parse("annotate", ["in.jsonl", "-o", "o.jsonl", "--annotator", "mock:", "--backend-option",
                                "base_url=http://127.0.0.1:8000/v1", "--backend-option", "concurrency=3",
                                "--labels", "assistant.motivation=esconv_strategies"])
    cfg = config_from_args(AnnotateConfig, ns)
    assert cfg.backend_options == {"base_url": "http://127.0.0.1:8000/v1", "concurrency": 3}
    assert cfg.labels == {"assistant.motivation": "esconv_strategies"}
    _, ns = _parse("compare", ["--model", "a=hf:x", "--model", "a=hf:y"])
    with pytest.raises(UserError, match="given twice"):
        config_from_args(CompareConfig, ns)
    _, ns = _parse("annotate", ["in.jsonl", "-o", "o.jsonl"])
    with pytest.raises(UserError, match="annotator"):  # required, given nowhere: named
        config_from_args(AnnotateConfig, ns)


def test_a_command_runs_from_a_config_file(tmp_path: Path, capsys) -> None:
    (tmp_path / "d.json").write_text(json.dumps([
        {"id": f"d{i}", "conversations": [{"from": "human", "value": f"hi {i}"}, {"from": "gpt", "value": "hey"}]}
        for i in range(6)]))
    (tmp_path / "spec.json").write_text(json.dumps({"d.json": {"prompt": "", "size": 6}}))
    cfg = tmp_path / "mix.yaml"
    cfg.write_text(f"spec: {tmp_path / 'spec.json'}\noutput: {tmp_path / 'out'}\nvalid_size: 1\n")
    assert cli.main(["mix", "--config", str(cfg), "--valid-size", "2"]) == 0
    man = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert (man["summary"]["train"], man["summary"]["valid"]) == (4, 2)
    assert cli.main(["mix", "--config", str(cfg), "--set", "bogus=1"]) == 2
    assert "bogus" in capsys.readouterr().err

"""Docs that cannot drift: docs/cli.md is the commands' --help, every file the docs and the help
examples cite exists, and every shipped config loads and validates against its config model."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from sage_dialog import cli
from sage_dialog.core.config import load_config

ROOT = Path(__file__).resolve().parents[1]
# a repo path as cited in prose or examples: configs/..., benchmarks/..., docs/... (not inside a longer path or URL)
CITED = re.compile(r"(?<![\w./-])((?:configs|benchmarks|docs)/[\w*.{}/-]*[\w*}])")


def _gen_cli_docs():
    spec = importlib.util.spec_from_file_location("gen_cli_docs", ROOT / "scripts" / "gen_cli_docs.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cli_reference_is_generated_from_the_help() -> None:
    gen = _gen_cli_docs()
    assert (ROOT / "docs" / "cli.md").read_text(encoding="utf-8") == gen.render(), \
        "docs/cli.md is out of date: run python scripts/gen_cli_docs.py"
    assert gen.main(["--check"]) == 0


def _texts() -> dict[str, str]:
    texts = {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8")
             for p in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]}
    for name in cli.COMMANDS:
        parser, _ = cli.build_parser(name)
        texts[f"sage-dialog {name} --help"] = parser.format_help()
    return texts


def _exists(cited: str) -> bool:
    if "*" in cited or "{" in cited:  # a pattern: something must match it
        pattern = re.sub(r"\{[^}]*\}", "*", cited)
        return any(ROOT.glob(pattern))
    return (ROOT / cited).exists()


def test_every_cited_repo_file_exists() -> None:
    missing = []
    for where, text in _texts().items():
        for m in CITED.finditer(text):
            cited = m.group(1).rstrip(".")
            if not _exists(cited):
                missing.append(f"{where}: {cited}")
    assert not missing, "cited but missing:\n" + "\n".join(missing)


def test_the_path_check_finds_a_missing_file() -> None:
    found = [m.group(1) for m in CITED.finditer("see configs/nope.yaml, https://x.org/docs/a.md and docs/cli.md.")]
    assert found == ["configs/nope.yaml", "docs/cli.md"]
    assert not _exists("configs/nope.yaml") and _exists("configs/train-*.yaml")


def _config_model(first_line: str) -> type:
    """The config model of a shipped config, from the command on its first line."""
    from sage_dialog.pipeline.loop_config import LoopConfig
    from sage_dialog.stages.compare.compare import CompareConfig
    from sage_dialog.stages.rl import RunConfig as RLRunConfig
    from sage_dialog.train.config import DPORunConfig, SFTRunConfig

    models = {"train sft": SFTRunConfig, "train dpo": DPORunConfig, "train rl": RLRunConfig, "run": LoopConfig,
              "compare": CompareConfig}
    for cmd, model in models.items():
        if re.search(rf"(sage-dialog|-m sage_dialog) {cmd}\b", first_line):
            return model
    raise AssertionError(f"no config model known for {first_line!r}: add it to tests/test_docs.py")


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads_and_validates(path: Path) -> None:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# "), f"{path.name}: must open with the command that runs it"
    assert f"configs/{path.name}" in first, f"{path.name}: the command on line 1 should name this file"
    cfg = load_config(_config_model(first), path)
    assert cfg is not None

"""Every broken input in bad_inputs/ gives its promised error lines, exit 2, no traceback, no output."""

from __future__ import annotations

from pathlib import Path

import pytest

from sage_dialog.cli import main

BAD = Path(__file__).parent / "bad_inputs"
CASES = sorted(p.name for p in BAD.iterdir() if p.suffix not in (".expected", ".md") and p.name not in ("commands", "bounded"))


def _expected(name: str, path: Path) -> tuple[list[str], bool]:
    text = (BAD / f"{name}.expected").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line.strip()]
    validate_only = any(line.startswith("# validate-only") for line in lines)
    return [line.replace("{path}", str(path)) for line in lines if not line.startswith("#")], validate_only


def test_every_case_has_an_expectation() -> None:
    assert len(CASES) >= 15
    for name in CASES:
        assert (BAD / f"{name}.expected").is_file(), name


@pytest.mark.parametrize("name", CASES)
def test_bad_input(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = BAD / name
    want, validate_only = _expected(name, path)
    assert want, f"{name}.expected lists no error"

    assert main(["validate", str(path)]) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in err and out == ""
    assert err.splitlines() == want

    if validate_only:
        assert main(["convert", str(path), str(tmp_path / "out.jsonl")]) == 0
        capsys.readouterr()
        return
    dst = tmp_path / "out" / "converted.jsonl"
    assert main(["convert", str(path), str(dst)]) == 2
    _, err = capsys.readouterr()
    assert "Traceback" not in err
    got = err.splitlines()
    assert got, "convert printed no error"
    if not got[0].endswith("can be checked but not converted"):  # check-only formats (judgements, specs)
        assert set(got) <= set(want), got
    assert not dst.exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # no temp files either

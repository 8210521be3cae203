"""compare against a real served model: `transformers serve` on 127.0.0.1, through the OpenAI backend."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sage_dialog.cli import main


@pytest.mark.slow
def test_compare_a_served_model_with_an_in_process_one(tiny_model: Path, tmp_path: Path) -> None:
    pytest.importorskip("transformers.cli.serve", reason="needs transformers[serving]")
    from sage_dialog.backends.servers import port_is_open, transformers_server

    seeds = tmp_path / "seeds.txt"
    seeds.write_text("I failed my driving test again.\nMy sister is getting married next week!\n")
    with transformers_server(tiny_model) as srv:
        served = {"spec": f"openai:{srv.model}", "options": {"base_url": srv.base_url, "concurrency": 4}}
        cfg = tmp_path / "compare.yaml"
        cfg.write_text(json.dumps({  # JSON is YAML
            "out": str(tmp_path / "out"), "seeds": str(seeds), "turns": 2, "bootstrap": 100,
            "models": {"served": served, "local": f"hf:{tiny_model}"},
            "user": "oracle", "judges": [served, "oracle"],
            "sampling": {"temperature": 0.7, "max_tokens": 10},
        }))
        assert main(["compare", "--config", str(cfg), "--no-progress"]) == 0
        port = srv.port
    assert not port_is_open(port)  # the server is gone
    out = tmp_path / "out"
    verdicts = [json.loads(x) for x in (out / "verdicts.jsonl").read_text().splitlines()]
    assert len(verdicts) == 2 * 2 * 2  # seeds x orders x judges
    served_verdicts = [v for v in verdicts if v["judge"].startswith("pairwise:openai:")]
    assert len(served_verdicts) == 4
    assert all("probs" not in v for v in served_verdicts)  # the server gives no logprobs: none, and no error
    assert all(v["raw_output"] != "" or not v["parsed"] for v in served_verdicts)
    dialogs = [json.loads(x) for x in (out / "dialogs" / "served.jsonl").read_text().splitlines()]
    assert len(dialogs) == 2 and all(len(d["turns"]) == 4 for d in dialogs)
    assert all(d["meta"]["assistant"] == f"openai:{tiny_model}" for d in dialogs)  # played by the server
    assert "served vs local" in (out / "report.md").read_text()

"""EQ-Bench v2 from the copy shipped in this package, run as lm-evaluation-harness's own ``eq_bench`` task.

The harness's ``eq_bench`` task reads its 171 questions from the Hugging Face hub
(``pbevan11/EQ-Bench``), so offline it cannot run. ``sage_dialog/data/eq_bench/`` ships the same
171 EQ-Bench v2 questions with their v2.1 full-scale references (MIT license, Samuel Paech: the
LICENSE and a README naming the source sit beside the file). :func:`harness_task_config` takes the
harness's own task definition - its YAML, prompt, generation settings, metrics and its scorer
``calculate_score_fullscale`` - and swaps only the dataset for the shipped copy (lm-eval's
``custom_dataset`` hook). Nothing about the scoring is ours: a run here is the harness's ``eq_bench``.

The metrics are the harness's: ``eqbench`` (0-100; 0 is what random answers get, unparseable answers
count 0) and ``percent_parseable`` (the share of answers with four emotion scores matching the
question's emotions), the two figures EQ-Bench reports.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).resolve().parents[1] / "data" / "eq_bench"
QUESTIONS_FILE = DATA_DIR / "eq_bench_v2_questions_171.json"
TASK = "eq_bench"
# names people type for it (the docs once said ``eqbench``): all mean the harness's ``eq_bench``
ALIASES = {"eq_bench": TASK, "eqbench": TASK, "eq-bench": TASK}


def canonical_task(name: str) -> str:
    """``eqbench`` / ``eq-bench`` -> ``eq_bench``; any other name unchanged."""
    return ALIASES.get(name, name)


@cache
def load_questions() -> tuple[dict[str, Any], ...]:
    """The shipped questions in id order, as rows shaped like the hub copy the harness task reads.

    The harness's scorer reads ``reference_answer_fullscale`` with ``ast.literal_eval`` (the hub
    copy stores it as a string), so both reference fields become the ``repr`` of their dict.
    """
    raw = json.loads(QUESTIONS_FILE.read_text(encoding="utf-8"))
    rows = []
    for qid in sorted(raw, key=int):
        q = raw[qid]
        rows.append({"id": qid, "prompt": q["prompt"], "reference_answer": repr(q["reference_answer"]),
                     "reference_answer_fullscale": repr(q["reference_answer_fullscale"])})
    return tuple(rows)


def shipped_dataset(**_: Any) -> Any:
    """The shipped questions as the harness's ``validation`` split (its ``custom_dataset`` hook)."""
    import datasets

    return datasets.DatasetDict({"validation": datasets.Dataset.from_list(list(load_questions()))})


def harness_yaml() -> Path:
    """lm-eval's own task file for ``eq_bench``."""
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).resolve().parent / "eq_bench" / "default.yaml"


def harness_task_config() -> dict[str, Any]:
    """lm-eval's ``eq_bench`` config (scorer resolved) with its dataset replaced by the shipped copy."""
    from lm_eval.tasks._yaml_loader import load_yaml

    cfg = dict(load_yaml(harness_yaml(), resolve_func=True))
    cfg["custom_dataset"] = shipped_dataset
    cfg["dataset_path"] = str(DATA_DIR)  # only shown in the harness's logs: the data never comes from the hub
    cfg.pop("dataset_name", None)
    cfg.setdefault("metadata", {})["data"] = f"sage_dialog/data/eq_bench/{QUESTIONS_FILE.name}"
    return cfg


def harness_scorer() -> Any:
    """lm-eval's ``calculate_score_fullscale(doc, [answer]) -> {"eqbench", "percent_parseable"}``."""
    return harness_task_config()["process_results"]


__all__ = ["ALIASES", "DATA_DIR", "QUESTIONS_FILE", "TASK", "canonical_task", "harness_scorer",
           "harness_task_config", "harness_yaml", "load_questions", "shipped_dataset"]

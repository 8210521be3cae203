"""Every file and model a run config names, checked before the first stage (``sage-dialog run``).

A missing ``search.user_persona`` used to be found after annotate, chain, mix and SFT had run, a
missing ``base_model`` only at SFT. :func:`config_problems` walks the whole config (the loop's own
fields and the free-form stage sections) and returns one line per name that cannot be right, with
the config file and the dotted field:

* files: raw dialogs, seeds, the import's corpus file, personas, prompt templates and label files
  (a packaged name such as ``persona_user`` is fine; anything with a ``/`` or a file extension must
  exist);
* models: ``base_model`` and every role or model spec (``hf:PATH``, ``vllm:PATH``, ``mock:SCRIPT``,
  ``PATH.gguf``): a local path must exist; a hub id (``org/name``) must be in the local Hugging
  Face cache when ``HF_HUB_OFFLINE`` is set (else it is left to the download).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sage_dialog.core.errors import where

# keys whose string value names an input file (or a packaged prompt / label set by its bare name)
_FILE_KEYS = {"raw", "seeds", "file", "user_persona", "assistant_persona", "persona", "prompt_file", "template",
              "labels", "criteria", "system_file", "spec_file"}
# keys whose value is a model or a role spec (PROVIDER:MODEL, a path, oracle/assistant)
_MODEL_KEYS = {"base_model", "model", "models", "annotator", "judge", "judges", "user", "assistant", "adapter",
               "tokenizer", "reference"}
_LOCAL_PROVIDERS = {"hf", "vllm", "gguf"}
_NAMED = {"oracle", "assistant", "self", "none", ""}


def _walk(obj: Any, path: str = "") -> Iterator[tuple[str, str, Any]]:
    """``(dotted_field, last_key, value)`` for every leaf of nested dicts and lists."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _walk(v, f"{path}.{k}" if path else str(k))
    elif isinstance(obj, list):
        key = path.rsplit(".", 1)[-1]
        for i, v in enumerate(obj):
            for sub_path, _, leaf in _walk(v, f"{path}[{i}]"):
                yield sub_path, key, leaf
    else:
        yield path, path.rsplit(".", 1)[-1].split("[", 1)[0], obj


def _path_like(s: str) -> bool:
    return "/" in s or "\\" in s or s.startswith(("~", ".")) or Path(s).suffix != ""


def _file_problem(value: str) -> str | None:
    if not _path_like(value):
        return None  # a packaged prompt, label set or criteria name: its own loader says if unknown
    p = Path(value).expanduser()
    return None if p.exists() else f"{value}: no such file"


def _hub_id(s: str) -> bool:
    parts = s.split("/")
    return len(parts) == 2 and all(parts) and not s.startswith((".", "/", "~")) and not s.endswith(".gguf")


def _model_problem(value: str) -> str | None:
    spec = value
    provider, sep, rest = value.partition(":")
    if sep and provider.isidentifier() and not value.startswith(("/", ".")):
        if provider == "mock":
            return None if not rest or Path(rest).exists() else f"{value}: no such mock script {rest}"
        if provider not in _LOCAL_PROVIDERS:
            return None  # openai:, a server: checked when the backend starts
        spec = rest
    if spec in _NAMED or not spec:
        return None
    p = Path(spec).expanduser()
    if p.exists():
        return None
    if _hub_id(spec):
        if os.environ.get("HF_HUB_OFFLINE", "") in ("1", "true", "TRUE", "yes") and not _in_hub_cache(spec):
            return f"{value}: not a local folder, and not in the Hugging Face cache (HF_HUB_OFFLINE is set)"
        return None
    if _path_like(spec):
        return f"{value}: no such model folder or file"
    return None  # a short name (smollm2-135m): its resolver says if unknown


def _in_hub_cache(repo: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return True  # cannot tell: leave it to the loader
    got = try_to_load_from_cache(repo, "config.json")
    return isinstance(got, str)


def config_problems(data: dict[str, Any], source: object) -> list[str]:
    """One line per file or model named in ``data`` (a run config as a plain dict) that is missing."""
    problems: list[str] = []
    for field, key, value in _walk(data):
        if not isinstance(value, str):
            continue
        if key in _FILE_KEYS:
            why = _file_problem(value)
        elif key in _MODEL_KEYS:
            why = _model_problem(value)
        else:
            continue
        if why is not None:
            problems.append(f"{where(source, None, field)}: {why}")
    return problems


__all__ = ["config_problems"]

"""Merge a LoRA adapter into its base model and save a standalone model with tokenizer and template.

Example::

    from sage_dialog.train.export import export_model
    export_model("runs/sft", "runs/sft-merged")   # loads with AutoModelForCausalLM, no PEFT needed

A merged folder also records what it was made of (``merged_from.json``: the base and the adapter
folder, relative to the merged folder): an adapter later trained on the merged model can then run
as base + both adapters on one shared copy of the base (:mod:`sage_dialog.backends.shared_base`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from sage_dialog.backends.shared_base import MERGED_FROM
from sage_dialog.core.errors import UserError
from sage_dialog.core.outputs import commit_folder

log = logging.getLogger(__name__)


def is_adapter(path: str | Path) -> bool:
    return (Path(path) / "adapter_config.json").exists()


# what AutoTokenizer reads: a fast tokenizer, or a slow one's vocabulary (BPE, SentencePiece, WordPiece)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "spiece.model", "vocab.json", "vocab.txt")


def check_tokenizer(src: Path) -> None:
    """A :class:`UserError` naming what is missing when ``src`` has no tokenizer to export with it
    (transformers would only say "Couldn't instantiate the backend tokenizer")."""
    if any((src / f).is_file() for f in TOKENIZER_FILES):
        if (src / "vocab.json").is_file() and not (src / "tokenizer.json").is_file() \
                and not (src / "merges.txt").is_file():
            raise UserError(f"{src / 'merges.txt'}: no such file (a BPE tokenizer needs it beside vocab.json)")
        return
    raise UserError(f"{src / 'tokenizer.json'}: no such file: the model folder has no tokenizer (none of "
                    f"{', '.join(TOKENIZER_FILES)}); copy the base model's tokenizer files into {src}")


def export_model(src: str | Path, out: str | Path, *, base: str | None = None, dtype: str = "auto") -> Path:
    """Merge the adapter in ``src`` (or re-save a full model) into ``out``; return ``out``.

    ``base`` overrides the base model recorded in the adapter (useful when it moved). The tokenizer
    and ``chat_template.jinja`` saved at training time are copied, so inference uses the training
    template. The result is written to a temporary sibling and renamed: no partial output.
    """
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise UserError(f"{src}: no such folder (expected a training output folder)")
    if out.resolve() == src.resolve():
        raise UserError(f"-o {out}: must differ from the input folder")
    if is_adapter(src) or (src / "config.json").exists():
        check_tokenizer(src)  # before minutes of loading and merging
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype: Any = "auto" if dtype == "auto" else getattr(torch, dtype)  # auto: the checkpoint's dtype
    merged_from: dict[str, str] | None = None
    if is_adapter(src):
        from peft import PeftModel

        cfg = json.loads((src / "adapter_config.json").read_text(encoding="utf-8"))
        base_path = base or cfg.get("base_model_name_or_path")
        if not base_path:
            raise UserError(f"{src / 'adapter_config.json'}: field base_model_name_or_path: missing; pass --base")
        try:
            from sage_dialog.backends.gguf import resolve_model

            # a GGUF base (or its short name) loads from its converted folder
            model = AutoModelForCausalLM.from_pretrained(resolve_model(base_path), dtype=torch_dtype)
        except OSError as e:
            raise UserError(f"cannot load the base model {base_path!r}: {e} (pass --base)") from None
        model = PeftModel.from_pretrained(model, str(src)).merge_and_unload()
        merged_from = {"base": str(base_path), "adapter": os.path.relpath(src.resolve(), out.resolve())}
    elif (src / "config.json").exists():
        model = AutoModelForCausalLM.from_pretrained(str(src), dtype=torch_dtype)
    else:
        raise UserError(f"{src}: neither a LoRA adapter (adapter_config.json) nor a model (config.json)")
    tokenizer = AutoTokenizer.from_pretrained(str(src))
    template_file = src / "chat_template.jinja"
    if template_file.exists():
        tokenizer.chat_template = template_file.read_text(encoding="utf-8")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        if tokenizer.chat_template:
            (tmp / "chat_template.jinja").write_text(tokenizer.chat_template, encoding="utf-8")
        for extra in ("training_summary.json", "train_config.json"):
            if (src / extra).exists():
                shutil.copy2(src / extra, tmp / extra)
        if merged_from is not None:
            (tmp / MERGED_FROM).write_text(json.dumps(merged_from, indent=1) + "\n", encoding="utf-8")
    except BaseException:  # interrupted or failed: no hidden half-written folder stays behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    commit_folder(tmp, out, "export")  # replaces only what an earlier export wrote there
    log.info("exported %s -> %s", src, out)
    return out

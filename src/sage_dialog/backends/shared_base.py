"""One copy of a base model in memory for every ``hf:`` backend that uses it, with PEFT adapters on top.

A run that compares the base model, its SFT model and its DPO model, with the base also playing the
user and the judge, used to hold five copies of the same weights. Here backends whose model folders
resolve to the same base weights (same folder, dtype, device, attention) share one module:

* a plain spec (``hf:BASE``) runs the base with every adapter switched off;
* an adapter spec (``hf:ADAPTER_DIR``, a PEFT LoRA folder) runs the base with its chain of adapters
  switched on. The chain is the adapter plus the adapters its base was merged from: a DPO adapter
  trained on a merged SFT model (``sft/model``, whose ``merged_from.json`` names ``sft/train``)
  runs as base + SFT adapter + DPO adapter, which is the merged SFT model + the DPO adapter (LoRA
  updates add up on each layer) to float rounding.

Every forward pass of a backend runs inside :meth:`SharedModel.use`, which holds the shared lock
and switches the adapters, so batches of different adapters never interleave (each backend's
micro-batcher forms its batches; the lock runs them one at a time).

Adapters are not merged here (merging would change the shared weights): a LoRA layer costs a few
small extra matmuls per token. ``share_base=false`` on the backend loads its own merged copy instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MERGED_FROM = "merged_from.json"  # written by train.export next to a merged model: its base and adapter


@dataclass(frozen=True)
class AdapterChain:
    """A model as ``base`` (a folder or spec) plus PEFT adapter folders applied in order."""

    base: str
    adapters: tuple[str, ...] = ()


def is_adapter_dir(path: str | Path) -> bool:
    """Whether ``path`` is a PEFT adapter folder (it has ``adapter_config.json``)."""
    return (Path(path) / "adapter_config.json").is_file()


def _merged_from(folder: Path) -> tuple[str, Path] | None:
    """``(base, adapter folder)`` a merged model folder was made of, when both are still known."""
    f = folder / MERGED_FROM
    if not f.is_file():
        return None
    try:
        rec = json.loads(f.read_text(encoding="utf-8"))
        adapter = (folder / str(rec["adapter"])).resolve()
        base = str(rec["base"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return (base, adapter) if is_adapter_dir(adapter) else None


def resolve_chain(spec_path: str) -> AdapterChain:
    """The base and the adapter chain behind a model folder (a plain folder: no adapters).

    Follows an adapter's ``base_model_name_or_path`` down through adapter folders and merged folders
    that record what they were merged from (``merged_from.json``), to a model with neither.
    """
    adapters: list[str] = []
    current = spec_path
    for _ in range(32):  # a chain deeper than this is a loop in the records
        p = Path(current)
        if is_adapter_dir(p):
            adapters.insert(0, str(p.resolve()))
            try:
                cfg = json.loads((p / "adapter_config.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                break
            base = cfg.get("base_model_name_or_path")
            if not base:
                break
            current = str(base)
            continue
        if adapters and p.is_dir():  # only below an adapter: a merged folder asked for directly stays merged
            merged = _merged_from(p)
            if merged is not None:
                adapters.insert(0, str(merged[1]))
                current = merged[0]
                continue
        break
    return AdapterChain(current, tuple(adapters))


def adapter_name(path: str) -> str:
    """A PEFT adapter name for a folder (PEFT names may not contain dots)."""
    return "a" + hashlib.sha1(path.encode()).hexdigest()[:16]


@dataclass
class SharedModel:
    """One loaded base (``model``, LoRA layers injected in place once an adapter is loaded)."""

    key: tuple[str, ...]
    model: Any
    lock: threading.Lock = field(default_factory=threading.Lock)
    peft: Any = None  # the PeftModel wrapping ``model`` once an adapter is loaded
    adapters: set[str] = field(default_factory=set)
    active: tuple[str, ...] = ()
    users: int = 0

    def load_adapter(self, path: str) -> str:
        """Load the adapter folder ``path`` once; return its name."""
        name = adapter_name(path)
        with self.lock:
            if name in self.adapters:
                return name
            from peft import PeftModel

            if self.peft is None:
                self.peft = PeftModel.from_pretrained(self.model, path, adapter_name=name, is_trainable=False)
            else:
                self.peft.load_adapter(path, adapter_name=name, is_trainable=False)
            self.adapters.add(name)
            self.active = (name,)  # what PEFT switched on; use() sets what each batch needs
            self.model.eval()
        return name

    @contextlib.contextmanager
    def use(self, names: tuple[str, ...]) -> Iterator[Any]:
        """Hold the lock with exactly ``names`` active (none: the plain base); yields the module."""
        with self.lock:
            if self.peft is not None and names != self.active:
                tuner = self.peft.base_model
                if names:
                    tuner.enable_adapter_layers()
                    tuner.set_adapter(list(names))
                else:
                    tuner.disable_adapter_layers()
                self.active = names
            yield self.model


_registry: dict[tuple[str, ...], SharedModel] = {}
_registry_lock = threading.Lock()


def acquire(key: tuple[str, ...], load: Any) -> SharedModel:
    """The shared model under ``key``, loaded with ``load()`` by its first user."""
    with _registry_lock:
        shared = _registry.get(key)
        if shared is None:
            shared = SharedModel(key, load())
            _registry[key] = shared
            log.info("loaded shared base %s", key[0])
        shared.users += 1
        return shared


def release(shared: SharedModel) -> None:
    """One user fewer; the last one frees the weights."""
    with _registry_lock:
        shared.users -= 1
        if shared.users <= 0 and _registry.get(shared.key) is shared:
            del _registry[shared.key]


def loaded() -> int:
    """How many base models the registry holds now (for tests and logs)."""
    return len(_registry)


def model_key(path: str, dtype: str, device: str, attention: str) -> tuple[str, ...]:
    """Registry key: the same folder, dtype, device and attention are the same module."""
    real = os.path.realpath(path) if Path(path).exists() else path
    return (real, dtype, device, attention)

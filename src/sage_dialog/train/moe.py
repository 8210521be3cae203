"""Mixture-of-experts bases under DeepSpeed ZeRO-3.

ZeRO-3 gathers parameters module by module as the forward pass reaches them. A sparse MoE block
runs only the experts its router picks, so different ranks touch different expert modules and the
gathers deadlock or thrash. Marking the whole MoE block as a *leaf* makes ZeRO-3 gather it at once.
The block class is found by name (``MixtralSparseMoeBlock``, ``Qwen2MoeSparseMoeBlock``,
``DeepseekV3MoE``, ...), so any MoE architecture in transformers is handled without a list.
"""

from __future__ import annotations

import logging
import re
from typing import Any

log = logging.getLogger(__name__)

_MOE_NAME = re.compile(r"(SparseMoeBlock|SparseMoE|MoeBlock|MoE|Moe)$")


def find_moe_block_classes(model: Any) -> list[type]:
    """Classes of the model's sparse MoE blocks (outermost only: a MoE block inside one is skipped)."""
    found: dict[str, type] = {}
    for _name, module in model.named_modules():
        cls = type(module)
        if _MOE_NAME.search(cls.__name__) and "Experts" not in cls.__name__:
            found.setdefault(cls.__name__, cls)
    # keep only classes that are not nested inside another found class
    classes = set(found.values())
    inner: set[type] = set()
    for module in model.modules():
        if type(module) in classes:
            inner.update(type(sub) for sub in module.modules() if sub is not module and type(sub) in classes)
    outer = [c for c in found.values() if c not in inner]
    return outer


def set_zero3_leaf_modules(model: Any) -> list[str]:
    """When ZeRO-3 is active and the model has MoE blocks, register them as ZeRO-3 leaf modules.

    Returns the class names registered (empty when ZeRO-3 is off or the model is dense).
    """
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    if not is_deepspeed_zero3_enabled():
        return []
    classes = find_moe_block_classes(model)
    if not classes:
        return []
    from deepspeed.utils import set_z3_leaf_modules  # deepspeed is present whenever ZeRO-3 is enabled

    set_z3_leaf_modules(model, classes)
    names = [c.__name__ for c in classes]
    log.info("ZeRO-3: MoE blocks registered as leaf modules: %s", ", ".join(names))
    return names

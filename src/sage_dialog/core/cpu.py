"""What the CPU computes natively, for choosing a number format.

A CPU with AVX512-BF16 or AMX multiplies bfloat16 matrices in hardware: on the 2-core AMD EPYC
development machine a 512x576x1536 matmul ran at 384 GFLOPS in bfloat16 against 136 in float32, a
SmolLM2-135M forward 1.9x faster with bfloat16 weights and a forward+backward 1.55x faster under
bfloat16 autocast (benchmarks/RESULTS-real-model.md). Without them torch emulates bfloat16, which is
slower than float32, so ``fast`` (a ``dtype``/``precision`` value) asks this module first.
"""

from __future__ import annotations

import functools


@functools.cache
def native_bf16() -> bool:
    """Whether this CPU has bfloat16 matrix instructions (AVX512-BF16 or AMX tiles) torch can use."""
    try:
        import torch.cpu as tcpu
    except ImportError:  # pragma: no cover - torch is a dependency of every model-loading path
        return False
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(tcpu, name, lambda: False)()) for name in probes)


def fast_dtype(device: str) -> str:
    """What ``dtype: fast`` means on ``device``: bfloat16 on a GPU or on a CPU that computes it
    natively (:func:`native_bf16`), float32 on any other CPU."""
    on_cpu = not str(device).startswith("cuda")
    return "bfloat16" if not on_cpu or native_bf16() else "float32"

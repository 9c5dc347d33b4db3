"""bf16 units detected, and the mixed-precision choice a stage makes from them (issue 17). bf16 autocast pays only
where the processor has bf16 units (a SmolLM2 LoRA step: 1.5x faster on Zen 4 with ``avx512_bf16``, 25x slower on
an AVX2-only host), so ``autocast: auto`` takes bf16 only where ``has_bf16`` finds them. Weights, LoRA adapters
and the optimizer stay float32; autocast runs the matmuls in bf16."""

import contextlib
import functools
from pathlib import Path

import torch

from .config import AUTOCAST
from .errors import ConfigError

#: CPU flags (as /proc/cpuinfo and lscpu print them) that mean native bf16 arithmetic
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of this machine (empty where /proc/cpuinfo is unreadable, e.g. macOS)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def has_bf16(device: str) -> bool:
    """True where bf16 matmuls run on native units: a bf16-capable CUDA GPU, or a CPU with bf16 flags."""
    if device == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bool(BF16_CPU_FLAGS & cpu_flags())


def resolve_autocast(mode: str, device: str) -> str | None:
    """The autocast dtype name a stage trains/generates with on ``device`` ("cpu" / "cuda"): "bf16" or None."""
    if mode not in AUTOCAST:
        raise ConfigError(f"autocast={mode!r} is not allowed; allowed values: {', '.join(AUTOCAST)}. "
                          "Fix: autocast: auto (bf16 where the hardware has bf16 units)", param="autocast")
    if mode == "off":
        return None
    if has_bf16(device):
        return "bf16"
    if mode == "bf16":
        raise ConfigError(f"autocast=bf16 on {device!r}, which has no bf16 units (CPU flags {sorted(BF16_CPU_FLAGS)} "
                          "absent, or no bf16 GPU): bf16 would be emulated and run up to 25x slower. "
                          "Fix: autocast: auto (or off)", param="autocast")
    return None


def autocast_context(dtype: str | None, device: str = "cpu"):
    """``torch.autocast`` to bf16 for a resolved ``dtype`` of "bf16" (``resolve_autocast``), else a no-op."""
    return torch.autocast(device, dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()

"""How close a training step runs to this machine's arithmetic (issue 17): the project's speed settings against a
plain fp32 LoRA step of the same shape, and the step's efficiency against the matmul peak measured in this run.

Each variant is the alignment stage's own SFT step in a fresh process (``benchmarks.overhead.spawn``):
``plain``, ``bf16`` (``autocast: auto``), ``answer_only`` (``answer_only_head``), ``project`` (both). Efficiency =
(4 x base parameters x tokens per step) / step time over the fp32 matmul peak of the model's own shape: a LoRA
step with frozen base weights costs about a forward (2N per token) plus the activation half of the backward (2N).
"""

import time

import torch

from vaccine_lib.cli import env_int
from vaccine_lib.config import AlignConfig
from vaccine_lib.hardware import BF16_CPU_FLAGS, cpu_flags, has_bf16, resolve_autocast
from vaccine_lib.models import load_model

from .overhead import spawn

VARIANTS = {"plain": {}, "bf16": {"autocast": "auto"}, "answer_only": {"answer_only_head": True},
            "project": {"autocast": "auto", "answer_only_head": True}}
#: issue 17's target: the project's step at least this much faster than the plain fp32 step (bf16 hosts)
TARGET_SPEEDUP = 1.6


def describe_hardware(device: str = "cpu") -> dict:
    """Hardware facts for the record: the kernel set torch picked and whether bf16 units are present."""
    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "bf16_units": has_bf16(device),
            "bf16_cpu_flags": sorted(BF16_CPU_FLAGS & cpu_flags())}


def matmul_gflops(dtype: torch.dtype, threads: int, m: int = 1024, k: int = 576, n: int = 576, reps: int = 30) -> float:
    """Best-of-3 GFLOP/s of an (m x k) @ (k x n) product in ``dtype`` with ``threads`` torch threads."""
    if threads:
        torch.set_num_threads(threads)
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = max(best, 2 * m * k * n * reps / (time.perf_counter() - t0) / 1e9)
    return best


def run(model_name: str = "smollm2-135m-instruct", quick: bool = False) -> dict:
    """``make bench``: every variant's step time, the speed-up of the project's settings, the efficiency."""
    batch, seq, warmup, steps = (2, 64, 1, 2) if quick else (8, 128, 2, 5)
    threads = env_int("VACCINE_BENCH_THREADS", 0, 0, 1024, "torch threads of the benchmark; 0 = torch's default")
    base = AlignConfig(model=model_name, batch_size=batch, lr=1e-3, seed=0, device="cpu", method="sft",
                       lora_targets="attention+mlp", max_steps=warmup + steps, max_length=max(seq, 16))
    step = {name: spawn(base.with_(**v), seq, warmup, threads)["step_s"] for name, v in VARIANTS.items()}
    n_params = sum(p.numel() for p in load_model(model_name)[0].parameters())
    used = threads or torch.get_num_threads()
    peak = {d: matmul_gflops(getattr(torch, d), used) for d in ("float32", "bfloat16")}
    flops = 4 * n_params * batch * seq
    return {"bench": "speed", "model": model_name, "quick": quick, "threads": used, "batch": batch, "seq": seq,
            "steps": steps, **{f"{k}_step_s": round(v, 3) for k, v in step.items()},
            "speedup_project_vs_plain": round(step["plain"] / step["project"], 3),
            "autocast_resolved": resolve_autocast("auto", "cpu") or "off", **describe_hardware("cpu"),
            "matmul_gflops_fp32": round(peak["float32"], 1), "matmul_gflops_bf16": round(peak["bfloat16"], 1),
            "efficiency_plain_fp32": round(flops / step["plain"] / 1e9 / peak["float32"], 3),
            "target_speedup": TARGET_SPEEDUP}

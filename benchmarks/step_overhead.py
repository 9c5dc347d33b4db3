"""``make bench``'s step overhead: :func:`benchmarks.overhead.measure` (the measurement notebook 05
runs with its profile) at fixed settings, as one flat dict, beside the paper's ratios."""

from .overhead import measure
from vaccine_lib.cli import env_int
from vaccine_lib.config import AlignConfig

#: the paper's ratios this measurement is compared with (Tables 5 / 10 and the issue's targets)
TARGETS = {"time_ratio_tau1": 1.95, "time_ratio_tau10": 1.15, "memory_ratio": 1.05}


def run(model_name: str = "smollm2-135m-instruct", quick: bool = False) -> dict:
    """SFT, Vaccine (tau = 1) and Accelerated Vaccine (tau = 10): step times, their ratios, the memory ratio."""
    kw = dict(batch=2, seq=64, warmup=1, steps=3) if quick else dict(batch=8, seq=128, warmup=2, steps=10)
    align = AlignConfig(model=model_name, batch_size=kw["batch"], lr=1e-3, seed=0)
    threads = env_int("VACCINE_BENCH_THREADS", 0, 0, 1024, "torch threads of the benchmark; 0 = torch's default")
    df = measure(align, seq=kw["seq"], warmup=kw["warmup"], steps=kw["steps"], taus=(10,), threads=threads)
    sft, vac, acc = (df.iloc[i] for i in range(3))
    return {"bench": "step_overhead", "model": model_name, "quick": quick, "device": sft["device"],
            "threads": int(sft["threads"]), **kw,
            "sft_step_s": round(sft["step_s"], 4), "vaccine_tau1_step_s": round(vac["step_s"], 4),
            "vaccine_tau10_step_s": round(acc["step_s"], 4), "time_ratio_tau1": round(vac["slowdown"], 3),
            "time_ratio_tau10": round(acc["slowdown"], 3), "memory_ratio": round(vac["memory_ratio"], 3),
            "memory_method": sft["memory_method"], "targets": TARGETS}

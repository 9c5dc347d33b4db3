"""Step time and peak memory of SFT, Vaccine and Accelerated Vaccine (paper Tables 5 and 10): the one
overhead measurement, used by notebook 05 (:func:`from_profile`) and ``make bench`` (:func:`run`).

Each method runs in a fresh subprocess (so peak-memory numbers do not mix) on the same model, the same
LoRA adapter, the same fixed batches and thread count, through the real ``Trainer`` / ``VaccineTrainer``:

- batches: real alignment rows (Alpaca prompt, loss on the response only) tokenised and padded/truncated to
  exactly ``seq_len`` tokens, so every step has the same shape;
- time: wall time of each optimizer step (``on_step_begin`` -> ``on_step_end``, synchronised on CUDA) after
  the warm-up steps; mean and SD over the timed steps. An Accelerated Vaccine run with period tau times a
  multiple of tau steps, so it holds exactly one perturbed step per tau;
- memory: on CPU the peak resident set size of the worker process (``ru_maxrss``), on CUDA
  ``torch.cuda.max_memory_allocated``.

``python -m vaccine_lib.bench step_overhead [--quick]`` prints one JSON line.
"""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _alignment_rows(tok, n: int, seq: int) -> dict:
    """n real alignment rows, each exactly ``seq`` tokens: longer rows are cut (keeping at least one supervised
    token), shorter ones right-padded with label -100."""
    from vaccine_lib.data import alignment_set, tokenize_sft

    rows = tokenize_sft(alignment_set(n, seed=0), tok, max_length=max(seq, 512))
    out = {"input_ids": [], "attention_mask": [], "labels": []}
    for i in range(n):
        ids, labels = list(rows[i % len(rows)]["input_ids"])[:seq], list(rows[i % len(rows)]["labels"])[:seq]
        if all(x == -100 for x in labels):
            labels[-1] = ids[-1]
        pad = seq - len(ids)
        out["input_ids"].append(ids + [tok.pad_token_id] * pad)
        out["attention_mask"].append([1] * len(ids) + [0] * pad)
        out["labels"].append(labels + [-100] * pad)
    return out


def worker(spec: dict) -> dict:
    """One method in this (fresh) process; returns raw numbers. ``spec``: see :func:`measure`."""
    import torch

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from datasets import Dataset
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from vaccine_lib.config import LORA_TARGETS, dtype_of
    from vaccine_lib.lora import add_lora
    from vaccine_lib.models import load_model
    from vaccine_lib.vaccine import VaccineConfig, VaccineTrainer

    cuda = spec["device"] == "cuda"
    torch.manual_seed(spec["seed"])
    model, tok = load_model(spec["model"], dtype=dtype_of(spec["dtype"]))
    targets = spec["lora_targets"]
    model = add_lora(model, spec["lora_r"], spec["lora_alpha"], 0.1,
                     target_modules=LORA_TARGETS.get(targets, targets) if isinstance(targets, str) else targets)
    tau = spec["tau"]
    total = spec["warmup"] + spec["steps"]
    ds = Dataset.from_dict(_alignment_rows(tok, spec["batch"] * total, spec["seq"]))
    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.t0)

    common = dict(output_dir=tempfile.mkdtemp(prefix="vaccine-bench-"), per_device_train_batch_size=spec["batch"],
                  max_steps=total, learning_rate=spec["lr"], weight_decay=0.1, report_to=[], save_strategy="no",
                  logging_steps=10**6, disable_tqdm=True, seed=spec["seed"], use_cpu=not cuda,
                  dataloader_num_workers=0)
    if tau is None:
        trainer = Trainer(model=model, args=TrainingArguments(**common), train_dataset=ds, callbacks=[Timer()])
    else:
        trainer = VaccineTrainer(model=model, args=VaccineConfig(**common, rho=spec["rho"], tau=tau),
                                 train_dataset=ds, callbacks=[Timer()])
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    peak_mb = torch.cuda.max_memory_allocated() / 2**20 if cuda else _rss_mb()
    timed = times[spec["warmup"]:]
    mean = sum(timed) / len(timed)
    sd = math.sqrt(sum((t - mean) ** 2 for t in timed) / (len(timed) - 1)) if len(timed) > 1 else 0.0
    return {"step_s": mean, "step_s_sd": sd, "peak_memory_gb": peak_mb / 1024, "steps": len(timed),
            "device": "cuda" if cuda else "cpu", "threads": torch.get_num_threads(),
            "memory_method": "cuda max_memory_allocated" if cuda else "peak RSS of a fresh process"}


def measure(model: str, *, batch: int = 8, seq: int = 128, warmup: int = 2, steps: int = 10, taus=(10,),
            rho: float = 2.0, lr: float = 1e-3, lora_r: int = 8, lora_alpha: float = 4,
            lora_targets="attention", dtype: str = "float32", device: str = "auto", seed: int = 0,
            threads: int = 0):
    """SFT, Vaccine (tau = 1) and Accelerated Vaccine (each tau in ``taus``): one row each with ``step_s``,
    ``step_s_sd``, ``peak_memory_gb``, ``slowdown`` (step time / SFT's), ``memory_ratio``, ``steps``."""
    import pandas as pd

    from vaccine_lib.config import resolve_device

    device = resolve_device(device)
    methods = [("SFT", None), ("Vaccine", 1)] + [(f"Accelerated Vaccine (tau={t})", int(t)) for t in taus]
    rows = []
    for name, tau in methods:
        n_steps = steps if tau in (None, 1) else max(steps, int(tau)) // int(tau) * int(tau)
        spec = dict(model=model, batch=batch, seq=seq, warmup=warmup, steps=n_steps, tau=tau, rho=rho, lr=lr,
                    lora_r=lora_r, lora_alpha=lora_alpha, lora_targets=lora_targets, dtype=dtype, device=device,
                    seed=seed, threads=threads)
        proc = subprocess.run([sys.executable, "-m", "vaccine_lib.bench.step_overhead", "--worker", json.dumps(spec)],
                              capture_output=True, text=True,
                              env={**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"})
        if proc.returncode != 0:
            raise RuntimeError(f"overhead worker {name} failed:\n{proc.stderr[-4000:]}")
        rows.append({"method": name, "tau": tau, **json.loads(proc.stdout.strip().splitlines()[-1])})
    df = pd.DataFrame(rows)
    df["slowdown"] = df["step_s"] / df["step_s"].iloc[0]
    df["memory_ratio"] = df["peak_memory_gb"] / df["peak_memory_gb"].iloc[0]
    return df


def from_profile(P):
    """:func:`measure` with a profile's ``overhead`` section and alignment adapter (notebook 05)."""
    o, a = P.overhead, P.align
    return measure(P.model, batch=o.batch_size, seq=o.seq_len, warmup=o.warmup_steps, steps=o.steps, taus=o.taus,
                   rho=a.rho, lr=a.lr, lora_r=a.lora_r, lora_alpha=a.lora_alpha, lora_targets=a.lora_targets,
                   dtype=P.dtype, device=P.device, seed=P.seed, threads=P.threads)


def run(model_name: str = "smollm2-135m-instruct", quick: bool = False) -> dict:
    """``make bench``: the same measurement at fixed settings, as one flat dict."""
    kw = dict(batch=2, seq=64, warmup=1, steps=3, taus=(10,)) if quick else dict(batch=8, seq=128, warmup=2, steps=10,
                                                                              taus=(10,))
    df = measure(model_name, **kw, threads=int(os.environ.get("VACCINE_BENCH_THREADS", "0")))
    sft, vac, acc = (df.iloc[i] for i in range(3))
    return {"bench": "step_overhead", "model": model_name, "quick": quick, "device": sft["device"],
            "threads": int(sft["threads"]), **{k: v for k, v in kw.items() if k != "taus"},
            "sft_step_s": round(sft["step_s"], 4), "vaccine_tau1_step_s": round(vac["step_s"], 4),
            "vaccine_tau10_step_s": round(acc["step_s"], 4), "time_ratio_tau1": round(vac["slowdown"], 3),
            "time_ratio_tau10": round(acc["slowdown"], 3), "memory_ratio": round(vac["memory_ratio"], 3),
            "memory_method": sft["memory_method"],
            "targets": {"time_ratio_tau1": 1.95, "time_ratio_tau10": 1.15, "memory_ratio": 1.05}}


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", help="internal: run one method (JSON spec) in this process")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--quick", action="store_true")
    a = p.parse_args(argv)
    out = worker(json.loads(a.worker)) if a.worker else run(a.model, a.quick)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

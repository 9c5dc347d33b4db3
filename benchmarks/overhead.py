"""Step time and peak memory of SFT, Vaccine and Accelerated Vaccine (paper Tables 5 and 10): the one
overhead measurement, used by notebook 05 (:func:`from_profile`) and ``make bench`` (``benchmarks.step_overhead``, which
reports it beside the paper's ratios).

Each method runs in a fresh subprocess (peak memories do not mix) through the alignment stage's own
``trainer_setup``, on the same model, adapter, threads and real alignment rows padded/cut to exactly ``seq_len``
tokens. Time: each optimizer step after the warm-up (synchronised on CUDA); an Accelerated Vaccine run times a
multiple of tau steps (exactly one perturbed step per tau). Memory: peak RSS on CPU, ``max_memory_allocated`` on
CUDA.
"""

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import pandas as pd
import torch
from datasets import Dataset
from transformers import TrainerCallback

from vaccine_lib.config import AlignConfig, dtype_of, resolve_device
from vaccine_lib.data import alignment_set, tokenize_sft
from vaccine_lib.lora import add_lora
from vaccine_lib.models import load_model
from vaccine_lib.stages import trainer_setup

def _alignment_rows(tok, n: int, seq: int) -> dict:
    """n real alignment rows, each exactly ``seq`` tokens: longer rows are cut (keeping at least one supervised
    token), shorter ones right-padded with label -100."""
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
    """One method in this (fresh) process: ``spec`` = ``{"align": AlignConfig fields, "warmup", "seq",
    "threads"}``; returns raw numbers."""
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    a = AlignConfig(**spec["align"])
    cuda = a.device == "cuda"
    torch.manual_seed(a.seed)
    model, tok = load_model(a.model, dtype=dtype_of(a.dtype))
    model = add_lora(model, a.lora_r, a.lora_alpha, a.lora_dropout, target_modules=a.target_modules())
    ds = Dataset.from_dict(_alignment_rows(tok, a.batch_size * a.max_steps, spec["seq"]))
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

    args, trainer_cls, extra = trainer_setup(a, tempfile.mkdtemp(prefix="vaccine-bench-"))  # the stages' own map
    trainer = trainer_cls(model=model, args=args, train_dataset=ds, callbacks=[Timer()], **extra)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    peak_mb = torch.cuda.max_memory_allocated() / 2**20 if cuda else resource.getrusage(
        resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB
    return {"times": times[spec["warmup"]:], "peak_memory_gb": peak_mb / 1024, "device": "cuda" if cuda else "cpu",
            "threads": torch.get_num_threads(),
            "memory_method": "cuda max_memory_allocated" if cuda else "peak RSS of a fresh process"}


def spawn(a: AlignConfig, seq: int, warmup: int, threads: int) -> dict:
    """:func:`worker` for the stage config ``a`` in a fresh process (peak memory of its own); its raw numbers."""
    spec = {"align": a.model_dump(), "warmup": warmup, "seq": seq, "threads": threads}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.overhead", json.dumps(spec)],
                          capture_output=True, text=True,
                          env={**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"})
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark worker ({a.method}) failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(align: AlignConfig, *, seq: int = 128, warmup: int = 2, steps: int = 10, taus=(10,), threads: int = 0,
            rounds: int = 1):
    """SFT, Vaccine (tau = 1) and Accelerated Vaccine (each tau in ``taus``) with the optimiser, adapter, model
    and batch size of ``align``: one row each with ``step_s``, ``step_s_sd``, ``peak_memory_gb``, ``slowdown``
    (step time / SFT's), ``memory_ratio``, ``steps`` (all rounds pooled; peak memory: the largest) and
    ``round_step_s`` (each round's mean step time, space-separated, in round order: the claims pair them).

    ``rounds`` > 1 runs the methods that many times, in alternating order (SFT first, then last, ...), so that
    a drift of the machine's speed during the measurement (a shared CPU, clock changes) falls on every method
    alike instead of on whichever ran first."""
    methods = [("SFT", None), ("Vaccine", 1)] + [(f"Accelerated Vaccine (tau={t})", int(t)) for t in taus]
    runs: dict[str, list[dict]] = {name: [] for name, _ in methods}
    for r in range(rounds):
        for name, tau in methods if r % 2 == 0 else methods[::-1]:
            n_steps = steps if tau in (None, 1) else max(steps, tau) // tau * tau
            a = align.with_(method="sft" if tau is None else "vaccine", tau=tau or 1, max_steps=warmup + n_steps,
                            max_length=max(seq, 16), device=resolve_device(align.device))
            runs[name].append(spawn(a, seq, warmup, threads))
    rows = []
    for name, tau in methods:
        timed = [t for run in runs[name] for t in run["times"]]
        per_round = " ".join(f"{statistics.fmean(run['times']):.6g}" for run in runs[name])
        rows.append({"method": name, "tau": tau, "step_s": statistics.fmean(timed),
                     "step_s_sd": statistics.stdev(timed) if len(timed) > 1 else 0.0, "round_step_s": per_round,
                     "peak_memory_gb": max(run["peak_memory_gb"] for run in runs[name]), "steps": len(timed),
                     **{k: runs[name][0][k] for k in ("device", "threads", "memory_method")}})
    df = pd.DataFrame(rows)
    df["slowdown"] = df["step_s"] / df["step_s"].iloc[0]
    df["memory_ratio"] = df["peak_memory_gb"] / df["peak_memory_gb"].iloc[0]
    return df


def from_profile(P):
    """:func:`measure` with a profile's ``overhead`` section and alignment settings (notebook 05)."""
    o = P.overhead
    return measure(P.align.with_(batch_size=o.batch_size, grad_accum=1, seed=P.seed), seq=o.seq_len,
                   warmup=o.warmup_steps, steps=o.steps, taus=o.taus, threads=P.threads, rounds=o.rounds)


if __name__ == "__main__":  # the worker process of measure(): one method, its JSON spec as the argument
    print(json.dumps(worker(json.loads(sys.argv[1]))), flush=True)

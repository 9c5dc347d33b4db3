"""Step time and peak memory of Vaccine (tau = 1, tau = 10) relative to SFT (paper Table 5 and Table 10).

Each method runs in a fresh subprocess (so peak-memory numbers do not mix) on the same model, the same LoRA
adapter (r = 8, alpha 4, dropout 0.1 on q/k/v/o), the same fixed batches, the same number of threads, through
the real ``Trainer`` / ``VaccineTrainer``. Batches (``VACCINE_BENCH_DATA``):

- ``alignment`` (default): the workload Vaccine actually runs, real alignment rows (Alpaca prompt, loss on the
  response only) tokenised and padded/truncated to exactly ``seq`` tokens, so every step has the same shape;
- ``synthetic``: random tokens with the loss on every position (no prompt masking), a worst case for Vaccine's
  pass 1, whose LM head runs only on supervised positions.

- time: wall time of each optimizer step (``on_step_begin`` -> ``on_step_end``: forward/backward passes,
  optimizer, scheduler), after warm-up steps; mean over the timed steps. The tau = 10 window is a multiple of 10
  steps, so it holds exactly one perturbed step per 10.
- memory: on CPU, peak resident set size of the worker process (``resource.getrusage(RUSAGE_SELF).ru_maxrss``;
  ``tracemalloc`` does not see torch allocations); ``memory_ratio`` compares whole-process peaks like the paper's
  GPU-memory column, ``memory_delta_ratio`` compares the peak minus the RSS after setup (model, adapter, batches
  loaded), i.e. what training itself adds. On CUDA: ``torch.cuda.max_memory_allocated``.

Targets (paper: 1.93-1.97x time at tau = 1, 1.02x at tau = 100, ~1.003x memory): time_ratio_tau1 <= 1.95,
time_ratio_tau10 <= 1.15, memory_ratio <= 1.05.

``python -m vaccine_lib.bench step_overhead [--quick]`` prints the result as one JSON line.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time

METHODS = ("sft", "vaccine_tau1", "vaccine_tau10")


def _settings(quick: bool) -> dict:
    if quick:  # smoke check: small batches, few steps
        return dict(batch=2, seq=64, warmup=1, steps={"sft": 3, "vaccine_tau1": 3, "vaccine_tau10": 10})
    return dict(batch=8, seq=128, warmup=2, steps={"sft": 10, "vaccine_tau1": 10, "vaccine_tau10": 30})


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _alignment_rows(tok, n: int, seq: int) -> dict:
    """n real alignment rows, each exactly ``seq`` tokens (right padding with label -100)."""
    from vaccine_lib.data import alignment_set, tokenize_sft

    rows = tokenize_sft(alignment_set(n, seed=0), tok, max_length=seq)
    out = {"input_ids": [], "attention_mask": [], "labels": []}
    for ids, labels in zip(rows["input_ids"], rows["labels"]):
        pad = seq - len(ids)
        out["input_ids"].append(list(ids) + [tok.pad_token_id] * pad)
        out["attention_mask"].append([1] * len(ids) + [0] * pad)
        out["labels"].append(list(labels) + [-100] * pad)
    return out


def worker(method: str, model_name: str, batch: int, seq: int, warmup: int, steps: int, threads: int,
           data: str = "alignment") -> dict:
    """One method in this (fresh) process; returns raw numbers."""
    import torch

    torch.set_num_threads(threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from vaccine_lib.models import load_model
    from vaccine_lib.vaccine import VaccineConfig, VaccineTrainer

    cuda = torch.cuda.is_available()
    model, tok = load_model(model_name)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=4, lora_dropout=0.1, bias="none", task_type="CAUSAL_LM",
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    total = warmup + steps
    if data == "alignment":
        ds = Dataset.from_dict(_alignment_rows(tok, batch * total, seq))
    else:
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(10, len(tok), (batch * total, seq), generator=g).tolist()
        ds = Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * seq] * len(ids), "labels": ids})
    supervised = sum(sum(1 for x in row if x != -100) for row in ds["labels"]) / (len(ds) * seq)
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

    common = dict(output_dir=tempfile.mkdtemp(prefix="bench-"), per_device_train_batch_size=batch, max_steps=total,
                  learning_rate=1e-5, weight_decay=0.1, report_to=[], save_strategy="no", logging_steps=10**6,
                  disable_tqdm=True, seed=0, use_cpu=not cuda, bf16=cuda, dataloader_num_workers=0)
    if method == "sft":
        trainer = Trainer(model=model, args=TrainingArguments(**common), train_dataset=ds, callbacks=[Timer()])
    else:
        tau = {"vaccine_tau1": 1, "vaccine_tau10": 10}[method]
        trainer = VaccineTrainer(model=model, args=VaccineConfig(**common, rho=2.0, tau=tau), train_dataset=ds,
                                 callbacks=[Timer()])
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base_mb = torch.cuda.memory_allocated() / 2**20
    else:
        base_mb = _rss_mb()
    trainer.train()
    peak_mb = torch.cuda.max_memory_allocated() / 2**20 if cuda else _rss_mb()
    timed = times[warmup:]
    return {"method": method, "step_s": sum(timed) / len(timed), "step_s_all": [round(t, 4) for t in times],
            "peak_mb": peak_mb, "setup_mb": base_mb, "steps": len(timed), "warmup": warmup,
            "device": "cuda" if cuda else "cpu", "threads": torch.get_num_threads(), "data": data,
            "supervised_fraction": round(supervised, 3)}


def run(model_name: str = "smollm2-135m-instruct", quick: bool = False, threads: int | None = None) -> dict:
    """Run the three methods in fresh subprocesses and return one flat dict of numbers."""
    s = _settings(quick)
    threads = threads or int(os.environ.get("VACCINE_BENCH_THREADS", "0")) or (os.cpu_count() or 1)
    data = os.environ.get("VACCINE_BENCH_DATA", "alignment")
    if data not in ("alignment", "synthetic"):
        raise ValueError(f"VACCINE_BENCH_DATA={data!r}; allowed values: alignment, synthetic")
    raw = {}
    for method in METHODS:
        cmd = [sys.executable, "-m", "vaccine_lib.bench.step_overhead", "--worker", method, "--model", model_name,
               "--batch", str(s["batch"]), "--seq", str(s["seq"]), "--warmup", str(s["warmup"]),
               "--steps", str(s["steps"][method]), "--threads", str(threads), "--data", data]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
        if proc.returncode != 0:
            raise RuntimeError(f"benchmark worker {method} failed:\n{proc.stderr[-4000:]}")
        raw[method] = json.loads(proc.stdout.strip().splitlines()[-1])
    sft, t1, t10 = (raw[m] for m in METHODS)
    peak_vac = max(t1["peak_mb"], t10["peak_mb"])
    return {
        "bench": "step_overhead",
        "model": model_name,
        "quick": quick,
        "device": sft["device"],
        "threads": sft["threads"],
        "batch": s["batch"],
        "seq_len": s["seq"],
        "data": data,
        "supervised_fraction": sft["supervised_fraction"],
        "warmup_steps": s["warmup"],
        "steps": {m: raw[m]["steps"] for m in METHODS},
        "sft_step_s": round(sft["step_s"], 4),
        "vaccine_tau1_step_s": round(t1["step_s"], 4),
        "vaccine_tau10_step_s": round(t10["step_s"], 4),
        "time_ratio_tau1": round(t1["step_s"] / sft["step_s"], 3),
        "time_ratio_tau10": round(t10["step_s"] / sft["step_s"], 3),
        "sft_peak_mb": round(sft["peak_mb"], 1),
        "vaccine_tau1_peak_mb": round(t1["peak_mb"], 1),
        "vaccine_tau10_peak_mb": round(t10["peak_mb"], 1),
        "memory_ratio": round(peak_vac / sft["peak_mb"], 3),
        "memory_delta_ratio": round((t1["peak_mb"] - t1["setup_mb"]) / max(1e-9, sft["peak_mb"] - sft["setup_mb"]), 3),
        "memory_method": "cuda max_memory_allocated" if sft["device"] == "cuda" else "peak RSS (ru_maxrss), fresh process",
        "targets": {"time_ratio_tau1": 1.95, "time_ratio_tau10": 1.15, "memory_ratio": 1.05},
    }


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", choices=METHODS, help="internal: run one method in this process")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--data", choices=("alignment", "synthetic"), default="alignment")
    a = p.parse_args(argv)
    if a.worker:
        out = worker(a.worker, a.model, a.batch, a.seq, a.warmup, a.steps, a.threads or (os.cpu_count() or 1), a.data)
    else:
        out = run(a.model, a.quick, a.threads or None)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Experiment grids shared by the notebooks: profile -> stage configs -> tidy result tables.

The notebooks stay thin: they pick a grid (which defenses, which p, which n, ...) and call
:func:`run_grid`, which trains/evaluates every point through the cached pipeline
(``vaccine_lib.pipeline``) and returns one row per (defense, p, n, task, seed, variant) with
``hs``, ``refusal``, ``label_only``, ``fa``, ``drift``, ``align_loss``. Points shared between
notebooks map to the same stage hash, so they are computed once per ``run_dir``.

Method names follow the paper: ``NA`` (Non-Aligned: no alignment, then fine-tuning), ``SFT``,
``EWC``, ``Vlguard``, ``KL`` (SFT alignment + a fine-tuning defense) and ``Vaccine``
(Vaccine alignment + plain fine-tuning).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Iterable, Sequence

import pandas as pd

from .errors import check_choice
from .profiles import DEFENSES, Profile

#: columns of the tables run_grid returns
POINT_COLUMNS = ("defense", "task", "p", "n", "seed", "rho", "perturbation", "lora", "tau")
METRIC_COLUMNS = ("hs", "refusal", "label_only", "fa", "drift", "drift_sum_sq", "align_loss", "align_loss_before")

# --------------------------------------------------------------------------- configs


def _pipeline():
    from . import pipeline

    return pipeline


def align_config(P: Profile, method: str = "sft", *, seed: int | None = None, rho: float | None = None,
                 perturbation: str = "gradient", tau: int = 1):
    """The profile's :class:`~vaccine_lib.pipeline.AlignConfig` for ``method`` in none / sft / vaccine."""
    pl = _pipeline()
    a = P.align
    kw = dict(model=P.model, method=method, n_align=a.n, helpful_fraction=a.helpful_fraction, epochs=a.epochs,
              max_steps=a.max_steps, lr=a.lr, batch_size=a.batch_size, max_length=a.max_length,
              weight_decay=a.weight_decay, warmup_ratio=a.warmup_ratio, lora_r=a.lora_r, lora_alpha=a.lora_alpha,
              grad_accum=a.grad_accum, dtype=P.dtype, source=P.data_source, seed=P.seed if seed is None else seed)
    if method == "vaccine":
        kw.update(rho=a.rho if rho is None else rho, perturbation=perturbation, tau=tau)
    return pl.AlignConfig(**_known(pl.AlignConfig, kw)).validate()


def _known(cls, kw: dict) -> dict:
    import dataclasses

    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in kw.items() if k in names}


@dataclass(frozen=True)
class Point:
    """One fine-tuned model of a grid (paper naming)."""

    defense: str = "SFT"
    p: float | None = None  # None = the profile's finetune.p
    n: int | None = None
    task: str | None = None
    seed: int | None = None
    rho: float | None = None  # Vaccine alignment rho (None = profile's align.rho)
    perturbation: str = "gradient"
    lora: str | None = None  # None = paper default (double; single for EWC)
    tau: int = 1
    track_drift: bool = False  # log drift/alignment loss during fine-tuning (Fig. 3)


def resolve_point(P: Profile, point: Point) -> Point:
    """Fill in the profile's defaults, so that two points meaning the same model compare equal.

    The SFT and Vaccine models at the profile's own (task, n, p) with the default variant also log
    drift during fine-tuning (Fig. 3), so Tables 1, 2, 8 and Fig. 3 share those two models.
    """
    f = P.finetune
    task = point.task or f.task
    vaccine = point.defense == "Vaccine"
    pt = replace(point, task=task, p=f.p if point.p is None else float(point.p), n=point.n or f.for_task(task)["n"],
                 seed=P.seed if point.seed is None else point.seed,
                 rho=(P.align.rho if point.rho is None else float(point.rho)) if vaccine else None,
                 perturbation=point.perturbation if vaccine else "gradient", tau=point.tau if vaccine else 1,
                 lora=point.lora or ("single" if point.defense == "EWC" else "double"))
    reference = (pt.defense in ("SFT", "Vaccine") and pt.task == f.task and pt.n == f.n and pt.p == f.p
                 and pt.lora == "double" and pt.perturbation == "gradient" and pt.tau == 1
                 and (not vaccine or pt.rho == P.align.rho))
    return replace(pt, track_drift=point.track_drift or reference)


def finetune_config(P: Profile, point: Point):
    """The :class:`~vaccine_lib.pipeline.FinetuneConfig` of a grid point."""
    pl = _pipeline()
    check_choice("defense", point.defense, DEFENSES)
    pt = resolve_point(P, point)
    f = P.finetune
    per = f.for_task(pt.task)
    method = {"NA": "none", "Vaccine": "vaccine"}.get(pt.defense, "sft")
    a = align_config(P, method, seed=pt.seed, rho=pt.rho, perturbation=pt.perturbation, tau=pt.tau)
    defense = {"EWC": "ewc", "Vlguard": "vlguard", "KL": "kl"}.get(pt.defense, "sft")
    kw = dict(align=a, defense=defense, task=pt.task, n=pt.n, p=pt.p,
              epochs=per["epochs"], max_steps=f.max_steps, lr=f.lr, batch_size=f.batch_size, grad_accum=f.grad_accum,
              max_length=per["max_length"], lora=pt.lora, lora_r=f.lora_r, lora_alpha=f.lora_alpha,
              ewc_lambda=f.ewc_lambda, kl_weight=f.kl_weight, vlguard_m=f.vlguard_m, seed=pt.seed,
              drift_every=P.drift.every_steps if pt.track_drift else 0, drift_samples=P.drift.n_samples)
    return pl.FinetuneConfig(**_known(pl.FinetuneConfig, kw)).validate()


def eval_config(P: Profile, seed: int = 0):
    pl = _pipeline()
    e = P.eval
    kw = dict(n_harmful=e.n_harmful, n_task=e.n_task, max_new_tokens=e.max_new_tokens, judge=e.judge,
              batch_size=e.batch_size, seed=seed)
    return pl.EvalConfig(**_known(pl.EvalConfig, kw))


# --------------------------------------------------------------------------- grids


ALWAYS_SWEPT = ("NA", "SFT", "Vaccine")


def table1_points(P: Profile, defenses: Sequence[str] | None = None) -> list[Point]:
    """Every defense at every harmful ratio (paper Table 1 / Fig. 2), every seed.

    EWC / Vlguard / KL run at ``finetune.baseline_ps`` when the profile sets it (to fit a time budget).
    """
    f = P.finetune

    def ratios(d):
        return f.ps if d in ALWAYS_SWEPT or not f.baseline_ps else f.baseline_ps

    return [Point(d, p=p, seed=s) for s in P.seeds for d in (defenses or f.defenses) for p in ratios(d)]


def table2_points(P: Profile) -> list[Point]:
    """Sample counts at ``p_samples`` (paper Table 2)."""
    f = P.finetune
    return [Point(d, p=f.p_samples, n=n, seed=s) for s in P.seeds for d in f.sample_defenses for n in f.sample_counts]


def table4_points(P: Profile, defenses: Sequence[str] | None = None) -> list[Point]:
    """Every task at the profile's p (paper Table 4)."""
    return [Point(d, task=t, seed=s) for s in P.seeds for d in (defenses or P.finetune.defenses)
            for t in P.finetune.tasks]


def rho_points(P: Profile) -> list[Point]:
    """Vaccine at each rho (Table 6); SFT is the rho = 0 reference."""
    return [Point("Vaccine", rho=r, seed=s) for s in P.seeds for r in P.ablations.rhos]


def perturbation_points(P: Profile) -> list[Point]:
    """Gradient vs Gaussian perturbation at the profile's rho (Table 7)."""
    return [Point("Vaccine", perturbation=k, seed=s) for s in P.seeds for k in P.ablations.perturbations]


def lora_points(P: Profile) -> list[Point]:
    """Single- vs Double-LoRA for SFT and Vaccine (Table 8)."""
    return [Point(d, lora=m, seed=s) for s in P.seeds for d in P.ablations.lora_defenses for m in P.ablations.lora_modes]


def drift_points(P: Profile) -> list[Point]:
    """SFT and Vaccine with drift tracked during fine-tuning (Fig. 3)."""
    return [Point(d, seed=s, track_drift=True) for s in P.seeds for d in ("SFT", "Vaccine")]


def notebook_points(P: Profile, notebook: str) -> list[Point]:
    """Fine-tuned models each notebook needs (used by :func:`estimate_runtime`)."""
    nb = notebook[:2]
    if nb == "01":
        return table1_points(P, [d for d in ("NA", "SFT") if d in P.finetune.defenses] or ["SFT"])
    if nb == "03":
        return table1_points(P) + table2_points(P) + table4_points(P)
    if nb == "04":
        return drift_points(P) + rho_points(P) + perturbation_points(P) + lora_points(P)
    return []


# --------------------------------------------------------------------------- running


def _rate(m: dict, *names):
    for n in names:
        if n in m and m[n] is not None:
            return float(m[n])
    return math.nan


def _row(point: Point, ft_cfg, metrics: dict, drift: dict | None, cached: bool, seconds: float) -> dict:
    a = ft_cfg.align
    row = {
        "defense": point.defense, "task": ft_cfg.task, "p": ft_cfg.p, "n": ft_cfg.n, "seed": ft_cfg.seed,
        "rho": a.rho if a.method == "vaccine" else 0.0,
        "perturbation": a.perturbation if a.method == "vaccine" else "-",
        "lora": ft_cfg.lora, "tau": a.tau if a.method == "vaccine" else 1,
        "hs": _rate(metrics, "hs", "harmful_score"),
        "refusal": _rate(metrics, "refusal_rate", "refusal"),
        "label_only": _rate(metrics, "label_only_rate", "label_only"),
        "fa": _rate(metrics, "fa", f"fa_{ft_cfg.task}", "accuracy"),
        "fa_choice": _rate(metrics, "fa_choice", f"fa_choice_{ft_cfg.task}"),
    }
    if drift:
        row.update(drift=_rate(drift, "drift_per_token"), drift_sum_sq=_rate(drift, "drift_sum_sq"),
                   align_loss=_rate(drift, "align_loss"), align_loss_before=_rate(drift, "align_loss_before"))
    row.update(cached=cached, seconds=round(seconds, 1))
    return row


def run_point(P: Profile, run_dir, point: Point, *, with_drift: bool = True) -> dict:
    """Fine-tune (cached), evaluate (cached) and optionally measure drift of one grid point."""
    pl = _pipeline()
    ft_cfg = finetune_config(P, point)
    t0 = time.perf_counter()
    res = pl.finetune(ft_cfg, run_dir)
    metrics = pl.evaluate(ft_cfg, eval_config(P), run_dir)
    d = pl.drift(ft_cfg, run_dir, n_samples=P.drift.n_samples) if with_drift else None
    return _row(point, ft_cfg, metrics, d, bool(getattr(res, "cached", False)), time.perf_counter() - t0)


def run_grid(P: Profile, run_dir, points: Iterable[Point], *, with_drift: bool = True, progress: bool = True) -> pd.DataFrame:
    """Run every point (deduplicated, in order); one row each. Prints one progress line per point."""
    seen, rows = set(), []
    points = [p for p in points if not (resolve_point(P, p) in seen or seen.add(resolve_point(P, p)))]
    t_all = time.perf_counter()
    for i, point in enumerate(points, 1):
        row = run_point(P, run_dir, point, with_drift=with_drift)
        rows.append(row)
        if progress:
            print(f"[{i}/{len(points)}] {describe_point(point, P)}: HS {row['hs']:.1f}  FA {row['fa']:.1f}"
                  f"{'  (cached)' if row['cached'] else ''}  {row['seconds']:.0f} s", flush=True)
    if progress:
        print(f"{len(points)} models in {time.perf_counter() - t_all:.0f} s", flush=True)
    return pd.DataFrame(rows)


def describe_point(point: Point, P: Profile) -> str:
    f = P.finetune
    parts = [point.defense, point.task or f.task, f"p={f.p if point.p is None else point.p:g}",
             f"n={point.n or f.for_task(point.task or f.task)['n']}"]
    if point.defense == "Vaccine" and point.rho is not None:
        parts.append(f"rho={point.rho:g}")
    if point.perturbation != "gradient":
        parts.append(point.perturbation)
    if point.lora:
        parts.append(f"{point.lora}-LoRA")
    if len(P.seeds) > 1:
        parts.append(f"seed={P.seed if point.seed is None else point.seed}")
    return " ".join(parts)


def run_aligned(P: Profile, run_dir, methods: Sequence[str] = ("none", "sft", "vaccine"), *,
                tasks: Sequence[str] | None = None) -> pd.DataFrame:
    """Evaluate the base and aligned models before any user fine-tuning (one row per method x seed)."""
    pl = _pipeline()
    rows = []
    names = {"none": "Base (no alignment)", "sft": "SFT-aligned", "vaccine": "Vaccine-aligned"}
    for s in P.seeds:
        for m in methods:
            a = align_config(P, m, seed=s)
            t0 = time.perf_counter()
            res = pl.align(a, run_dir)
            metrics = pl.evaluate(a, eval_config(P), run_dir, tasks=list(tasks or [P.finetune.task]))
            rows.append({"model": names.get(m, m), "method": m, "seed": s,
                         "hs": _rate(metrics, "hs", "harmful_score"),
                         "refusal": _rate(metrics, "refusal_rate", "refusal"),
                         "label_only": _rate(metrics, "label_only_rate", "label_only"),
                         "fa": _rate(metrics, "fa", f"fa_{P.finetune.task}", "accuracy"),
                         "fa_choice": _rate(metrics, "fa_choice", f"fa_choice_{P.finetune.task}"),
                         "align_loss": _rate(res.metrics, "align_loss", "final_loss"),
                         "train_seconds": _rate(res.metrics, "train_seconds"),
                         "cached": bool(getattr(res, "cached", True)),
                         "seconds": round(time.perf_counter() - t0, 1)})
    return pd.DataFrame(rows)


def align_histories(P: Profile, run_dir, methods: Sequence[str] = ("sft", "vaccine")) -> dict:
    """``{label: log_history}`` of the alignment runs (training curves, perturbation norms)."""
    pl = _pipeline()
    names = {"sft": "SFT", "vaccine": "Vaccine"}
    return {names.get(m, m): pl.align(align_config(P, m), run_dir).log_history for m in methods}


def history_frame(histories: dict, keys: Sequence[str]) -> pd.DataFrame:
    """Long table (model, step, key, value) of selected log-history keys."""
    rows = []
    for name, hist in histories.items():
        for rec in hist or []:
            for k in keys:
                if k in rec and "step" in rec:
                    rows.append({"model": name, "step": rec["step"], "key": k, "value": float(rec[k])})
    return pd.DataFrame(rows, columns=["model", "step", "key", "value"])


def drift_history(P: Profile, run_dir, points: Sequence[Point] | None = None) -> pd.DataFrame:
    """Drift and alignment loss logged during fine-tuning (``DriftCallback``) for Fig. 3."""
    pl = _pipeline()
    rows = []
    for point in points or drift_points(P):
        res = pl.finetune(finetune_config(P, point), run_dir)
        for rec in res.log_history:
            if "drift_per_token" in rec or "drift_sum_sq" in rec:
                rows.append({"defense": point.defense, "seed": P.seed if point.seed is None else point.seed,
                             "step": rec.get("step"), "drift": rec.get("drift_per_token", math.nan),
                             "drift_sum_sq": rec.get("drift_sum_sq", math.nan),
                             "align_loss": rec.get("align_loss", math.nan)})
    return pd.DataFrame(rows, columns=["defense", "seed", "step", "drift", "drift_sum_sq", "align_loss"])


# --------------------------------------------------------------------------- tables


def pivot(df: pd.DataFrame, metric: str, index: str = "defense", columns: str = "p", digits: int = 1) -> pd.DataFrame:
    """Mean over seeds of ``metric`` as an (index x columns) table, defenses in the paper's order."""
    from .plotting import DEFENSE_ORDER

    t = df.pivot_table(index=index, columns=columns, values=metric, aggfunc="mean")
    if index == "defense":
        t = t.reindex([d for d in DEFENSE_ORDER if d in t.index] + [d for d in t.index if d not in DEFENSE_ORDER])
    return t.round(digits)


#: the paper's numbers (Llama2-7B, SST2, HS / FA in %; see docs / vaccine-paper.md)
PAPER_TABLE1 = {
    "p": ["clean", 0.01, 0.05, 0.1, 0.2],
    "hs": {"NA": [34.2, 65.6, 81.0, 77.6, 79.2], "SFT": [48.6, 49.8, 52.6, 55.2, 60.0],
           "EWC": [50.6] * 5, "Vlguard": [49.4, 50.0, 54.0, 54.4, 53.6], "KL": [54.4, 53.6, 55.2, 54.0, 56.6],
           "Vaccine": [42.4, 42.2, 42.8, 48.2, 56.6]},
    "fa": {"NA": [95.6, 94.6, 94.0, 94.6, 94.4], "SFT": [94.2, 94.4, 94.8, 94.4, 94.2],
           "EWC": [88.6, 88.2, 87.4, 86.8, 80.6], "Vlguard": [94.8, 94.8, 94.6, 94.6, 94.6],
           "KL": [85.8, 85.8, 85.0, 85.4, 84.6], "Vaccine": [92.6, 92.6, 93.0, 93.8, 95.0]},
}
PAPER_TABLE2 = {"n": [500, 1000, 1500, 2000, 2500],
                "hs": {"SFT": [49.6, 52.8, 54.6, 57.6, 61.4], "Vaccine": [41.4, 42.8, 48.6, 51.4, 55.4]}}
PAPER_TABLE4 = {"SFT": {"sst2": (52.8, 94.8), "agnews": (52.6, 89.2), "gsm8k": (68.4, 23.4), "alpaca": (67.8, 43.14)},
                "Vaccine": {"sst2": (42.8, 93.0), "agnews": (41.6, 89.2), "gsm8k": (65.0, 22.4),
                            "alpaca": (54.0, 44.23)}}
PAPER_TABLE5 = {"SFT": {"step_s": 0.37, "memory_gb": 38.45}, "Vaccine": {"step_s": 0.73, "memory_gb": 38.57}}
PAPER_TABLE6 = {"rho": [0.01, 0.1, 1, 2, 5, 10], "hs": [54.4, 56.8, 54.4, 49.0, 46.2, 44.2],
                "fa": [94.4, 95.0, 94.4, 93.6, 92.8, 89.0]}
PAPER_TABLE10 = {"SFT": 1.0, "Vaccine": 1.93, "Accelerated Vaccine (tau=100)": 1.02}


def paper_table1() -> pd.DataFrame:
    """Paper Table 1 in long form: defense, p, hs, fa."""
    rows = []
    for d in PAPER_TABLE1["hs"]:
        for i, p in enumerate(PAPER_TABLE1["p"]):
            rows.append({"defense": d, "p": 0.0 if p == "clean" else p, "hs": PAPER_TABLE1["hs"][d][i],
                         "fa": PAPER_TABLE1["fa"][d][i]})
    return pd.DataFrame(rows)


def side_by_side(ours: pd.DataFrame, paper: pd.DataFrame, metric: str, index: str = "defense",
                 columns: str = "p") -> pd.DataFrame:
    """One table with rows per method and column pairs ``(p, ours)`` / ``(p, paper)``."""
    a = pivot(ours, metric, index, columns).add_prefix("ours p=")
    b = pivot(paper, metric, index, columns).add_prefix("paper p=")
    return a.join(b, how="outer").reindex(a.index.union(b.index, sort=False))


# --------------------------------------------------------------------------- overhead (Tables 5 / 10)


def _peak_rss_sampler():
    """A background sampler of this process's resident memory (CPU peak memory); returns (start, stop)."""
    import os
    import threading

    page = os.sysconf("SC_PAGE_SIZE")
    state = {"peak": 0, "run": True}

    def rss() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * page

    def loop():
        while state["run"]:
            state["peak"] = max(state["peak"], rss())
            time.sleep(0.005)

    th = threading.Thread(target=loop, daemon=True)

    def start():
        state["base"] = rss()
        th.start()

    def stop() -> tuple[int, int]:
        state["run"] = False
        th.join()
        return state["base"], state["peak"]

    return start, stop


def measure_overhead(P: Profile, methods: Sequence[tuple[str, dict]] | None = None) -> pd.DataFrame:
    """Per-step time and peak memory of SFT, Vaccine and Accelerated Vaccine on one fixed batch.

    Every method trains the same LoRA model (fresh copy, same seed) on the same batch of
    ``overhead.batch_size`` x ``overhead.seq_len`` tokens for ``warmup_steps + steps`` optimizer steps;
    the mean time of the last ``steps`` steps is reported. Peak memory: CUDA peak allocated on a GPU,
    otherwise the peak resident memory of the process during the steps (sampled every 5 ms).
    """
    import copy

    import torch

    from .lora import add_lora
    from .models import load_model
    from .vaccine import VaccineTrainer

    o = P.overhead
    methods = list(methods or [("SFT", {"rho": 0.0, "tau": 10**9}), ("Vaccine", {"rho": P.align.rho, "tau": 1})]
                   + [(f"Accelerated Vaccine (tau={t})", {"rho": P.align.rho, "tau": t}) for t in o.taus])
    device = "cuda" if (P.device in ("cuda", "auto") and torch.cuda.is_available()) else "cpu"
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[P.dtype]
    base, tok = load_model(P.model, dtype=dtype, seed=P.seed)
    g = torch.Generator().manual_seed(P.seed)
    ids = torch.randint(100, min(len(tok), 20000), (o.batch_size, o.seq_len), generator=g)
    labels = ids.clone()
    labels[:, : o.seq_len // 2] = -100  # loss on the second half, like a response
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    rows = []
    total = o.warmup_steps + o.steps
    for name, kw in methods:
        torch.manual_seed(P.seed)
        model = add_lora(copy.deepcopy(base), r=P.align.lora_r, alpha=P.align.lora_alpha)
        timer = _StepTimer(device)
        trainer = _overhead_trainer(VaccineTrainer, model, tok, batch, kw, P, device, total, timer)
        start, stop = _peak_rss_sampler()
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            start()
        trainer.train()
        if device == "cuda":
            peak = torch.cuda.max_memory_allocated() / 2**30
        else:
            peak = stop()[1] / 2**30
        times = timer.times[o.warmup_steps:]
        rows.append({"method": name, "tau": kw["tau"] if kw["tau"] < 10**9 else None,
                     "step_s": sum(times) / len(times),
                     "step_s_sd": float(pd.Series(times).std(ddof=1)) if len(times) > 1 else 0.0,
                     "peak_memory_gb": peak, "device": device, "steps": len(times)})
        del trainer, model
    df = pd.DataFrame(rows)
    df["slowdown"] = df["step_s"] / df.loc[df["method"] == "SFT", "step_s"].iloc[0]
    return df


class _StepTimer:
    """Trainer callback: wall time of every optimizer step (synchronised on CUDA)."""

    def __init__(self, device: str):
        from transformers import TrainerCallback

        timer = self

        class CB(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                timer._sync()
                timer._t0 = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):
                timer._sync()
                timer.times.append(time.perf_counter() - timer._t0)

        self.device = device
        self.times: list[float] = []
        self.callback = CB()

    def _sync(self):
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()


def _overhead_trainer(trainer_cls, model, tok, batch, kw, P, device, total, timer):
    import tempfile

    from datasets import Dataset

    from .vaccine import VaccineConfig

    rows = [{k: v[i].tolist() for k, v in batch.items()} for i in range(len(batch["input_ids"]))]
    ds = Dataset.from_list(rows * total)

    def collate(items):
        import torch

        return {k: torch.tensor([it[k] for it in items]) for k in items[0]}

    args = VaccineConfig(output_dir=tempfile.mkdtemp(prefix="vaccine-overhead-"),
                         per_device_train_batch_size=P.overhead.batch_size, max_steps=total, learning_rate=P.align.lr,
                         report_to=[], use_cpu=device == "cpu", save_strategy="no", logging_strategy="no",
                         rho=kw["rho"], tau=kw["tau"], disable_tqdm=True, seed=P.seed, dataloader_num_workers=0)
    return trainer_cls(model=model, args=args, train_dataset=ds, data_collator=collate, processing_class=tok,
                       callbacks=[timer.callback])


# --------------------------------------------------------------------------- t-SNE (Fig. 4)


def tsne_frame(P: Profile, run_dir, targets: dict, n: int | None = None, layer: int | str = -1) -> pd.DataFrame:
    """2-D t-SNE of per-sample alignment embeddings of several models (one joint fit).

    ``targets``: ``{label: AlignConfig | FinetuneConfig}``. Returns columns model, sample, x, y.
    """
    import numpy as np
    import torch
    from sklearn.manifold import TSNE

    from .data import alignment_set, format_prompt
    from .drift import pooled_embeddings

    pl = _pipeline()
    n = n or P.drift.tsne_samples
    ds = alignment_set(n, seed=P.seed)
    texts = [format_prompt(r) + r["output"] for r in ds]
    feats, labels = [], []
    for name, target in targets.items():
        model, tok = pl.load_stage_model(target, run_dir)
        model.eval()
        with torch.no_grad():
            emb = pooled_embeddings(model, tok, texts, layer=layer, max_length=P.align.max_length)
        feats.append(emb.float().numpy())
        labels += [name] * len(texts)
        del model
    X = np.concatenate(feats)
    perplexity = float(min(30.0, max(2.0, (len(X) - 1) / 3.0)))
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=P.seed).fit_transform(X)
    return pd.DataFrame({"model": labels, "sample": list(range(len(texts))) * len(targets), "x": xy[:, 0], "y": xy[:, 1]})


# --------------------------------------------------------------------------- runtime estimate


@dataclass(frozen=True)
class StepCosts:
    """Seconds per unit on the reference machine (2 CPU cores, SmolLM2-135M, batch 8 x 128 tokens)."""

    align_sft_step: float = 3.4
    align_vaccine_step: float = 6.5
    align_gaussian_step: float = 3.6
    ft_benign_step: float = 3.5
    ft_harmful_step: float = 6.0
    eval_model: float = 20.0
    drift_model: float = 8.0
    notebook_overhead: float = 10.0
    overhead_bench: float = 90.0
    tsne: float = 15.0


def estimate_runtime(P: Profile, costs: StepCosts = StepCosts()) -> dict:
    """Cold-cache runtime estimate (seconds) of all notebooks, counting each distinct stage once.

    Uses the profile's grid and :class:`StepCosts` (calibrated for SmolLM2-135M on 2 cores; scale
    them for other machines). Returns per-notebook and total seconds and the stage counts.
    """
    import math as _m

    seen_align, seen_ft, out = set(), set(), {}
    a = P.align
    align_steps = a.max_steps if a.max_steps > 0 else _m.ceil(a.n / a.batch_size) * a.epochs
    for nb in ("01", "02", "03", "04", "05"):
        t = costs.notebook_overhead
        pts = notebook_points(P, nb)
        aligns = set()
        if nb == "02":
            aligns = {("sft", None, "gradient"), ("vaccine", a.rho, "gradient")}
            t += 3 * costs.eval_model
        pts = [resolve_point(P, pt) for pt in pts]
        for pt in pts:
            if pt.defense != "NA":
                aligns.add(("vaccine", pt.rho, pt.perturbation) if pt.defense == "Vaccine" else ("sft", None, "gradient"))
        for key in aligns - seen_align:
            seen_align.add(key)
            step = costs.align_sft_step if key[0] == "sft" else (
                costs.align_gaussian_step if key[2] == "gaussian" else costs.align_vaccine_step)
            t += align_steps * step
        for pt in pts:
            if pt in seen_ft:
                continue
            seen_ft.add(pt)
            f = P.finetune.for_task(pt.task)
            n_total = pt.n + (P.finetune.vlguard_m if pt.defense == "Vlguard" else 0)
            steps = (P.finetune.max_steps if P.finetune.max_steps > 0
                     else _m.ceil(n_total / P.finetune.batch_size) * f["epochs"])
            frac = 1 - (1 - pt.p) ** P.finetune.batch_size  # batches holding a (long) harmful row
            step = costs.ft_benign_step + frac * (costs.ft_harmful_step - costs.ft_benign_step)
            if pt.defense in ("EWC", "KL"):
                step *= 1.3
            t += steps * step + costs.eval_model + costs.drift_model
            if pt.track_drift:
                t += steps / P.drift.every_steps * costs.drift_model
        if nb == "04":
            t += costs.tsne
        if nb == "05":
            t += costs.overhead_bench
        out[nb] = round(t)
    out["total"] = sum(out.values())
    out["distinct_alignments"] = len(seen_align)
    out["distinct_finetunes"] = len(seen_ft)
    return out


# --------------------------------------------------------------------------- claim checks and previews


def trend(df: pd.DataFrame, x: str, ys: Sequence[str], by: str = "defense") -> pd.DataFrame:
    """Spearman rank correlation of each metric with ``x`` per group (+1: grows with x; NaN: constant)."""
    rows = []
    for key, g in df.groupby(by, sort=False):
        row = {by: key}
        for y in ys:
            if y not in g or g[x].nunique() < 2 or g[y].nunique() < 2:
                row[y] = math.nan
            else:
                row[y] = float(g[x].rank().corr(g[y].rank()))
        rows.append(row)
    return pd.DataFrame(rows)


def compare(df: pd.DataFrame, a: str, b: str, metric: str = "hs", on: Sequence[str] = ("p",)) -> pd.DataFrame:
    """``metric`` of method ``a`` minus method ``b`` at each value of ``on`` (mean over seeds)."""
    m = df.groupby(["defense", *on])[metric].mean().unstack("defense")
    if a not in m or b not in m:
        return pd.DataFrame(columns=[*on, a, b, "diff"])
    out = m[[a, b]].copy()
    out["diff"] = out[a] - out[b]
    return out.reset_index()


def generations(P: Profile, run_dir, target, part: str = "harmful", n: int = 3, max_chars: int = 160,
                only: str | None = None) -> pd.DataFrame:
    """A safe preview of a model's stored evaluation answers: LABELLED and TRUNCATED (``show_generations``).

    ``target`` is a :class:`Point`, an ``AlignConfig`` or a ``FinetuneConfig`` evaluated with the profile's
    evaluation settings. ``part``: ``"harmful"`` or a task name.
    """
    from .evaluation import ResultsStore, show_generations

    pl = _pipeline()
    cfg = finetune_config(P, target) if isinstance(target, Point) else target
    want = pl.describe(cfg)
    e = eval_config(P)
    key = "finetune_key" if "finetune_key" in want else "align_key"
    store = ResultsStore(run_dir)
    best = None
    for rec in store.records():
        c = rec.get("config", {})
        if c.get(key) != want[key] or c.get("stage") != want["stage"]:
            continue
        if any(c.get(f"eval_{k}") != getattr(e, k) for k in ("n_harmful", "max_new_tokens", "judge", "seed")):
            continue
        if best is None or str(rec.get("created", "")) > str(best.get("created", "")):
            best = rec
    if best is None:
        return show_generations([], n=n)
    gens = [g for g in store.generations(best["hash"]) if g.get("part") == part]
    return show_generations(gens, n=n, max_chars=max_chars, only=only)


def quiet() -> None:
    """Silence library warnings that clutter notebook outputs (deprecations, CPU pin_memory, tqdm widgets)."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*pin_memory.*")
    warnings.filterwarnings("ignore", message=".*IProgress not found.*")
    warnings.filterwarnings("ignore", message=".*TCP without encryption.*")
    try:
        import transformers

        transformers.logging.set_verbosity_error()
    except ImportError:
        pass
    logging.getLogger("datasets").setLevel(logging.ERROR)

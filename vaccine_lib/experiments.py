"""Run the registry's experiments and turn their stages into tidy result tables.

The notebooks stay thin: ``rows = run(P, RUN, "table1")`` trains / evaluates (cached) every point of
one registry entry (``vaccine_lib.grids``) and returns one row per fine-tuned model with the point
(``defense``, ``task``, ``p``, ``n``, ``seed``, ``rho``, ``perturbation``, ``lora``, ``tau``), the metrics
(``hs``, ``refusal``, ``label_only``, ``fa``, ``fa_choice``; with drift: ``drift``, ``drift_sum_sq``,
``align_loss``, ``align_loss_before``) and the stage keys (``stage_key``, ``eval_key``) that the
provenance of every saved table lists. Points shared between notebooks are the same cached stages.
"""

from __future__ import annotations

import math
import time
from typing import Sequence

import pandas as pd

from . import grids
from .config import AlignConfig, FinetuneConfig
from .profiles import Profile

from pathlib import Path

from .paths import REPO_ROOT  # noqa: E402
METRIC_COLUMNS = ("hs", "refusal", "label_only", "fa", "fa_choice", "drift", "drift_sum_sq", "align_loss",
                  "align_loss_before")


def _pipeline():
    from . import pipeline

    return pipeline


def _rate(m: dict, *names):
    for n in names:
        if n in m and m[n] is not None:
            return float(m[n])
    return math.nan


def _quality(m: dict) -> dict:
    """What stands beside HS / FA in every row: answer length on harmful prompts (a "safer" model may only be
    shorter), empty / degenerate answers (a broken model is not a safe one), over-refusal of benign
    instructions and the share of the most common task answer (one label for everything = task not learned)."""
    return {"mean_words": _rate(m, "mean_words"), "empty_rate": _rate(m, "empty_rate"),
            "degenerate_rate": _rate(m, "degenerate_rate"), "benign_refusal": _rate(m, "benign_refusal"),
            "fa_top_answer_share": _rate(m, "fa_top_answer_share"),
            "warning": m.get("degenerate") or ""}


def _row(P: Profile, cfg: FinetuneConfig, metrics: dict, drift: dict | None, seconds: float, cached: bool) -> dict:
    pl = _pipeline()
    a = cfg.align
    vaccine = a.method == "vaccine"
    row = {
        "defense": pl.method_label(cfg), "task": cfg.task, "p": cfg.p, "n": cfg.n, "seed": cfg.seed,
        "rho": a.rho if vaccine else 0.0, "perturbation": a.perturbation if vaccine else "-",
        "lora": cfg.lora_mode(), "tau": a.tau if vaccine else 1,
        "hs": _rate(metrics, "hs"), "refusal": _rate(metrics, "refusal_rate"),
        "label_only": _rate(metrics, "label_only_rate"), "fa": _rate(metrics, "fa", f"fa_{cfg.task}"),
        "fa_choice": _rate(metrics, "fa_choice", f"fa_choice_{cfg.task}"), **_quality(metrics),
    }
    if drift:
        row.update(drift=_rate(drift, "drift_per_token"), drift_sum_sq=_rate(drift, "drift_sum_sq"),
                   align_loss=_rate(drift, "align_loss"), align_loss_before=_rate(drift, "align_loss_before"))
    row.update(stage_key=pl.finetune_key(cfg), eval_key=metrics.get("eval_key"), cached=cached,
               seconds=round(seconds, 1))
    return row


def run_grid(P: Profile, run_dir, configs: Sequence[FinetuneConfig], *, with_drift: bool = False,
             progress: bool = True) -> pd.DataFrame:
    """Fine-tune, evaluate (and with ``with_drift`` measure drift of) every config (cached); one row each."""
    pl = _pipeline()
    seen, todo = set(), []
    for c in configs:
        k = pl.finetune_key(c)
        if k not in seen:
            seen.add(k)
            todo.append(c)
    rows, t_all = [], time.perf_counter()
    for i, cfg in enumerate(todo, 1):
        t0 = time.perf_counter()
        cached = pl.finetune(cfg, run_dir).cached
        metrics = pl.evaluate(cfg, P.eval, run_dir)
        d = pl.drift(cfg, run_dir, n_samples=P.drift.n_samples) if with_drift else None
        cached = cached and metrics["cached"] and (d is None or d["cached"])
        rows.append(_row(P, cfg, metrics, d, time.perf_counter() - t0, cached))
        if progress:
            r = rows[-1]
            print(f"[{i}/{len(todo)}] {grids.label_of(cfg)}: HS {r['hs']:.1f}  FA {r['fa']:.1f}"
                  f"{'  (cached)' if cached else ''}  {r['seconds']:.0f} s", flush=True)
    if progress:
        print(f"{len(todo)} models in {time.perf_counter() - t_all:.0f} s", flush=True)
    return pd.DataFrame(rows)


def run(P: Profile, run_dir, name: str, progress: bool = True) -> pd.DataFrame:
    """Run the registry entry ``name`` (``vaccine_lib.grids.EXPERIMENTS``) and return its rows."""
    exp = grids.get(name)
    return run_grid(P, run_dir, exp.finetunes(P), with_drift=exp.with_drift, progress=progress)


def check(df: pd.DataFrame, P: Profile, name: str, metrics: Sequence[str] = ("hs", "fa"),
          finite: Sequence[str] = ()) -> str:
    """A profile-independent check of a result table (for ``# NBVAL_CHECK_OUTPUT`` cells): one row per
    model the registry plans for entry ``name``, a seed on every row, ``metrics`` finite and within
    [0, 100], ``finite`` columns finite."""
    pl = _pipeline()
    exp = grids.get(name)
    planned = {pl.finetune_key(c) for c in exp.finetunes(P)} or {pl.align_key(a) for a in exp.aligns(P)}
    ok_rows = len(df) == len(planned) and set(df["stage_key"] if "stage_key" in df else []) == planned
    vals = df[list(metrics)].astype(float)
    in_range = bool(len(df)) and bool(vals.notna().all().all()) and bool(((vals >= 0) & (vals <= 100)).all().all())
    fin = all(bool(df[c].astype(float).map(math.isfinite).all()) for c in finite) if len(df) else False
    seeds = "seed" in df and bool(df["seed"].notna().all())
    out = (f"{name}: one row per planned model: {ok_rows}; seed on every row: {seeds}; "
           f"{'/'.join(metrics)} within [0, 100]: {in_range}")
    return out + (f"; {'/'.join(finite)} finite: {fin}" if finite else "")


def run_aligned(P: Profile, run_dir) -> pd.DataFrame:
    """Evaluate the base and aligned models before any user fine-tuning (one row per method x seed)."""
    pl = _pipeline()
    names = {"none": "Base (no alignment)", "sft": "SFT-aligned", "vaccine": "Vaccine-aligned"}
    rows = []
    for a in grids.aligned(P):
        t0 = time.perf_counter()
        res = pl.align(a, run_dir)
        m = pl.evaluate(a, P.eval, run_dir, tasks=[P.finetune.task])
        rows.append({"model": names[a.method], "method": a.method, "seed": a.seed, "hs": _rate(m, "hs"),
                     "refusal": _rate(m, "refusal_rate"), "label_only": _rate(m, "label_only_rate"),
                     "fa": _rate(m, "fa", f"fa_{P.finetune.task}"),
                     "fa_choice": _rate(m, "fa_choice", f"fa_choice_{P.finetune.task}"), **_quality(m),
                     "align_loss": _rate(res.metrics, "align_loss"), "train_seconds": _rate(res.metrics, "train_seconds"),
                     "stage_key": res.key, "eval_key": m.get("eval_key"), "cached": bool(res.cached and m["cached"]),
                     "seconds": round(time.perf_counter() - t0, 1)})
    return pd.DataFrame(rows)


def align_histories(P: Profile, run_dir, methods: Sequence[str] = ("sft", "vaccine")) -> dict:
    """``{label: log_history}`` of the alignment runs (first seed): training curves, perturbation norms."""
    pl = _pipeline()
    names = {"sft": "SFT", "vaccine": "Vaccine"}
    return {names.get(m, m): pl.align(grids.align_config(P, m), run_dir).log_history for m in methods}


def history_frame(histories: dict, keys: Sequence[str]) -> pd.DataFrame:
    """Long table (model, step, key, value) of selected log-history keys."""
    rows = [{"model": name, "step": rec["step"], "key": k, "value": float(rec[k])}
            for name, hist in histories.items() for rec in hist or [] for k in keys if k in rec and "step" in rec]
    return pd.DataFrame(rows, columns=["model", "step", "key", "value"])


def drift_history(P: Profile, run_dir) -> pd.DataFrame:
    """Drift and alignment loss logged during fine-tuning (``DriftCallback``) for Fig. 3, every seed."""
    pl = _pipeline()
    rows = []
    for cfg in grids.fig3(P):
        res = pl.finetune(cfg, run_dir)
        for rec in res.log_history:
            if "drift_per_token" in rec or "drift_sum_sq" in rec:
                rows.append({"defense": pl.method_label(cfg), "seed": cfg.seed, "step": rec.get("step"),
                             "drift": rec.get("drift_per_token", math.nan),
                             "drift_sum_sq": rec.get("drift_sum_sq", math.nan),
                             "align_loss": rec.get("align_loss", math.nan), "stage_key": res.key})
    return pd.DataFrame(rows, columns=["defense", "seed", "step", "drift", "drift_sum_sq", "align_loss", "stage_key"])


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


# --------------------------------------------------------------------------- t-SNE (Fig. 4)


def tsne_frame(P: Profile, run_dir, targets: dict | None = None, layer: int | str = -1) -> pd.DataFrame:
    """2-D t-SNE (one joint fit) of per-sample pooled attention outputs of several models on the same
    ``drift.tsne_samples`` alignment rows (from the profile's data source). ``targets``:
    ``{label: AlignConfig | FinetuneConfig}`` (default: SFT / Vaccine, aligned and fine-tuned).
    Columns: model, sample, x, y, stage_key."""
    import numpy as np
    import torch
    from sklearn.manifold import TSNE

    from .drift import pooled_embeddings

    pl = _pipeline()
    if targets is None:
        sft, vac = grids.fig4(P)
        targets = {"SFT-aligned": sft.align, "SFT fine-tuned": sft, "Vaccine-aligned": vac.align,
                   "Vaccine fine-tuned": vac}
    probe = P.align.with_(method="sft", seed=P.seed)
    feats, labels, keys = [], [], []
    for name, target in targets.items():
        model, tok = pl.load_stage_model(target, run_dir)
        batches = pl._probe_batches(probe, tok, P.drift.tsne_samples)
        with torch.no_grad():
            emb = pooled_embeddings(model, tok, batches, layer=layer)
        feats.append(emb.float().cpu().numpy())
        labels += [name] * len(emb)
        keys += [pl.finetune_key(target) if isinstance(target, FinetuneConfig) else pl.align_key(target)] * len(emb)
        del model
    X = np.concatenate(feats)
    perplexity = float(min(30.0, max(2.0, (len(X) - 1) / 3.0)))
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=P.seed).fit_transform(X)
    n = len(feats[0])
    return pd.DataFrame({"model": labels, "sample": list(range(n)) * len(targets), "x": xy[:, 0], "y": xy[:, 1],
                         "stage_key": keys})


def generations(P: Profile, run_dir, target: AlignConfig | FinetuneConfig, part: str = "harmful", n: int = 3,
                max_chars: int = 160, only: str | None = None) -> pd.DataFrame:
    """A safe preview of a model's stored evaluation answers: LABELLED and TRUNCATED (``show_generations``)."""
    from .evaluation import show_generations

    pl = _pipeline()
    tasks = (target.task,) if isinstance(target, FinetuneConfig) else (P.finetune.task,)
    gens = [g for g in pl.generations(target, P.eval, run_dir, tasks=tasks) if g.get("part") == part]
    return show_generations(gens, n=n, max_chars=max_chars, only=only)


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


def judge_agreement_table(run_dir, judges: Sequence[str] = ("classifier", "probe")) -> dict:
    """Both judges on every stored answer to a harmful prompt under ``run_dir`` (``judge.run_agreement``):
    ``{"pooled": {kappa, kappa_lo, kappa_hi, agreement, n}, "per_model": DataFrame}`` with one row per
    evaluated model (method, p, seed, HS and mean words under each judge, kappa)."""
    from .evaluation.agreement import run_agreement

    res = run_agreement(run_dir, judges)
    names = res["judges"]
    rows = []
    for m in res["models"]:
        cfg = m["config"]
        stage = cfg.get("stage", "finetune" if cfg.get("finetune_key") else "align")
        row = {"model": cfg.get("method") if stage == "finetune" else f"{cfg.get('align_method')}-aligned",
               "p": cfg.get("p"), "seed": cfg.get("ft_seed", cfg.get("seed")), "n": m[names[0]]["n"],
               "mean_words": m[names[0]]["mean_words"]}
        for n in names:
            row[f"hs_{n}"] = m[n]["hs"]
        row["kappa"] = res["per_model_kappa"].get(m["hash"], math.nan)
        row["eval_key"] = m["hash"]
        rows.append(row)
    a = res["agreement"] or {}
    lo, hi = a.get("kappa_ci95", [math.nan, math.nan])
    pooled = {"judges": names, "kappa": a.get("kappa", math.nan), "kappa_lo": lo, "kappa_hi": hi,
              "agreement": a.get("agreement", math.nan), "n": a.get("n", 0)}
    df = pd.DataFrame(rows)
    if len(df):
        df = df.sort_values(["model", "p", "seed"], na_position="first").reset_index(drop=True)
    return {"pooled": pooled, "per_model": df}


def notebook_setup(namespace: dict):
    """The cell after a notebook's parameters cell: quiet library warnings, set pandas' display options,
    validate the parameters (:func:`vaccine_lib.profiles.from_notebook`) and print the profile.

    Returns ``(profile, run_dir, figures_dir, tables_dir)``.
    """
    import pandas as pd

    from .profiles import describe, from_notebook

    quiet()
    pd.set_option("display.precision", 2)
    pd.set_option("display.width", 160)
    ctx = from_notebook(namespace)
    print(describe(ctx.profile))
    return ctx.profile, ctx.run_dir, ctx.figures_dir, ctx.tables_dir


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

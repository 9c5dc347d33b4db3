"""The notebooks' side of the library: their parameters (``notebook_setup``) and result tables from the stage cache
(``tables.run(P, RUN, "table1")``: one row per fine-tuned model of a registry entry, with its stage keys)."""

import json
import logging
import math
import time
import warnings
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import pandas as pd
import torch
import transformers

from . import registry
from .config import AlignConfig, FinetuneConfig
from .drift import pooled_embeddings
from .errors import ConfigError
from .evaluation import show_generations
from .evaluation.agreement import run_agreement
from .plotting import defense_order, history_frame  # noqa: F401 - notebook 02 calls tables.history_frame
from .profiles import (COMMITTED_PROFILE, Profile, check_inside, describe_profile, load_profile, load_yaml,
                       normalise_overrides)
from .provenance import set_context
from .stages import (align, align_key, drift, evaluate, finetune, finetune_key, load_stage_model, method_label,
                     probe_batches)
from .stages import generations as stored_generations


def _rate(m: dict, *names):
    return next((float(m[n]) for n in names if m.get(n) is not None), math.nan)


def _metrics(m: dict, task: str) -> dict:
    """HS / FA and what stands beside them: answer length (a "safer" model may only be shorter), empty / degenerate
    answers, benign over-refusal, the most common task answer's share, and the three-way split (``hs`` + ``refused``
    + ``off_topic`` = 100; ``refusal`` is the judge's flag, which a compliant answer may also carry)."""
    return {"hs": _rate(m, "hs"), "refused": _rate(m, "refused_rate"), "off_topic": _rate(m, "off_topic_rate"),
            "refusal": _rate(m, "refusal_rate"), "label_only": _rate(m, "label_only_rate"),
            "fa": _rate(m, "fa", f"fa_{task}"), "fa_choice": _rate(m, "fa_choice", f"fa_choice_{task}"),
            **{k: _rate(m, k) for k in ("mean_words", "empty_rate", "degenerate_rate", "benign_refusal",
                                        "fa_top_answer_share")}, "warning": m.get("degenerate") or ""}


def run(P: Profile, run_dir, name: str, progress: bool = True) -> pd.DataFrame:
    """Fine-tune, evaluate (and, ``with_drift``, measure drift of) every distinct model registry entry ``name``
    plans (cached); one row each with the point, the metrics and the stage keys."""
    exp = registry.get(name)
    todo = list({finetune_key(c): c for c in exp.finetunes(P)}.values())  # same key: the same model
    rows, t_all = [], time.perf_counter()
    for i, cfg in enumerate(todo, 1):
        t0, a = time.perf_counter(), cfg.align
        cached = finetune(cfg, run_dir).cached
        m = evaluate(cfg, P.eval, run_dir)
        d = drift(cfg, run_dir, n_samples=P.drift.n_samples) if exp.with_drift else None
        cached, vac = cached and m["cached"] and (d is None or d["cached"]), a.method == "vaccine"
        row = {"defense": method_label(cfg), "task": cfg.task, "p": cfg.p, "n": cfg.n, "seed": cfg.seed,
               "rho": a.rho if vac else 0.0, "perturbation": a.perturbation if vac else "-", "lora": cfg.lora_mode(),
               "tau": a.tau if vac else 1, **_metrics(m, cfg.task)}
        if d:
            row.update(drift=_rate(d, "drift_per_token"), drift_sum_sq=_rate(d, "drift_sum_sq"),
                       align_loss=_rate(d, "align_loss"), align_loss_before=_rate(d, "align_loss_before"))
        rows.append({**row, "stage_key": finetune_key(cfg), "eval_key": m.get("eval_key"), "cached": cached,
                     "seconds": round(time.perf_counter() - t0, 1)})
        if progress:
            print(f"[{i}/{len(todo)}] {registry.label_of(cfg)}: HS {row['hs']:.1f}  FA {row['fa']:.1f}"
                  f"{'  (cached)' if cached else ''}  {rows[-1]['seconds']:.0f} s", flush=True)
    if progress:
        print(f"{len(todo)} models in {time.perf_counter() - t_all:.0f} s", flush=True)
    return pd.DataFrame(rows)


def check(df: pd.DataFrame, P: Profile, name: str, metrics: Sequence[str] = ("hs", "fa"),
          finite: Sequence[str] = ()) -> str:
    """A profile-independent check of a result table (``# NBVAL_CHECK_OUTPUT`` cells): one row per planned model,
    a seed on every row, ``metrics`` finite and within [0, 100], ``finite`` columns finite."""
    exp = registry.get(name)
    planned = {finetune_key(c) for c in exp.finetunes(P)} or {align_key(a) for a in exp.aligns(P)}
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
    names = {"none": "Base (no alignment)", "sft": "SFT-aligned", "vaccine": "Vaccine-aligned"}
    rows = []
    for a in registry.aligned(P):
        t0 = time.perf_counter()
        res = align(a, run_dir)
        m = evaluate(a, P.eval, run_dir, tasks=[P.finetune.task])
        rows.append({"model": names[a.method], "method": a.method, "seed": a.seed, **_metrics(m, P.finetune.task),
                     **{k: _rate(res.metrics, k) for k in ("align_loss", "train_seconds")},
                     "stage_key": res.key, "eval_key": m.get("eval_key"), "cached": bool(res.cached and m["cached"]),
                     "seconds": round(time.perf_counter() - t0, 1)})
    return pd.DataFrame(rows)


def align_histories(P: Profile, run_dir) -> dict:
    """``{label: log_history}`` of the SFT and Vaccine alignments (first seed)."""
    return {label: align(registry.align_config(P, m), run_dir).log_history for m, label in
            (("sft", "SFT"), ("vaccine", "Vaccine"))}


def eps_layer_share(P: Profile, run_dir) -> pd.DataFrame:
    """Each layer's share of Vaccine's summed ||eps||^2 over its alignment (first seed; layer 0: the embedding
    output; a uniform split gives 1/L)."""
    share = align(registry.align_config(P, "vaccine"), run_dir).metrics.get("eps_layer_share") or []
    return pd.DataFrame({"layer": range(len(share)), "share": share, "uniform": [1 / max(len(share), 1)] * len(share)})


def drift_history(P: Profile, run_dir) -> pd.DataFrame:
    """Drift and alignment loss logged during fine-tuning (``DriftCallback``) for Fig. 3, every seed."""
    rows = []
    for cfg in registry.fig3(P):
        res = finetune(cfg, run_dir)
        rows += [{"defense": method_label(cfg), "seed": cfg.seed, "step": rec.get("step"),
                  "drift": rec.get("drift_per_token", math.nan), "drift_sum_sq": rec.get("drift_sum_sq", math.nan),
                  "align_loss": rec.get("align_loss", math.nan), "stage_key": res.key}
                 for rec in res.log_history if "drift_per_token" in rec or "drift_sum_sq" in rec]
    return pd.DataFrame(rows, columns=["defense", "seed", "step", "drift", "drift_sum_sq", "align_loss", "stage_key"])


def pivot(df: pd.DataFrame, metric: str, index: str = "defense", columns: str = "p", digits: int = 1) -> pd.DataFrame:
    """Mean over seeds of ``metric`` as an (index x columns) table, defenses in the paper's order."""
    t = df.pivot_table(index=index, columns=columns, values=metric, aggfunc="mean")
    return (t.reindex(defense_order(t.index)) if index == "defense" else t).round(digits)


def side_by_side(ours: pd.DataFrame, paper: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One table with rows per method and column pairs ``(p, ours)`` / ``(p, paper)``."""
    a, b = pivot(ours, metric).add_prefix("ours p="), pivot(paper, metric).add_prefix("paper p=")
    return a.join(b, how="outer").reindex(a.index.union(b.index, sort=False))


def tsne_frame(P: Profile, run_dir) -> pd.DataFrame:
    """2-D t-SNE (one joint fit) of per-sample pooled attention outputs (last layer) of SFT / Vaccine, aligned and
    fine-tuned, on the same ``drift.tsne_samples`` alignment rows. Columns: model, sample, x, y, stage_key."""
    from sklearn.manifold import TSNE  # heavy (~1 s) and only for Fig. 4
    sft, vac = registry.fig4(P)
    targets = {"SFT-aligned": sft.align, "SFT fine-tuned": sft, "Vaccine-aligned": vac.align, "Vaccine fine-tuned": vac}
    probe = P.align.with_(method="sft", seed=P.seed)
    feats, labels, keys = [], [], []
    for name, target in targets.items():
        model, tok = load_stage_model(target, run_dir)
        batches = probe_batches(probe, tok, P.drift.tsne_samples)
        with torch.no_grad():
            emb = pooled_embeddings(model, tok, batches)
        feats.append(emb.float().cpu().numpy())
        labels += [name] * len(emb)
        keys += [finetune_key(target) if isinstance(target, FinetuneConfig) else align_key(target)] * len(emb)
        del model
    X = np.concatenate(feats)
    perplexity = float(min(30.0, max(2.0, (len(X) - 1) / 3.0)))
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=P.seed).fit_transform(X)
    n = len(feats[0])
    return pd.DataFrame({"model": labels, "sample": list(range(n)) * len(targets), "x": xy[:, 0], "y": xy[:, 1],
                         "stage_key": keys})


def generations(P: Profile, run_dir, target: AlignConfig | FinetuneConfig, n: int = 3, max_chars: int = 160):
    """A safe preview of a model's stored answers to harmful prompts (``show_generations``)."""
    tasks = (target.task,) if isinstance(target, FinetuneConfig) else (P.finetune.task,)
    gens = [g for g in stored_generations(target, P.eval, run_dir, tasks=tasks) if g.get("part") == "harmful"]
    return show_generations(gens, n=n, max_chars=max_chars)


def spearman_by_group(df: pd.DataFrame, x: str, ys: Sequence[str], by: str = "defense") -> pd.DataFrame:
    """Spearman rank correlation of each metric with ``x`` per group (+1: grows with x; NaN: constant)."""
    def rho(g, y):
        constant = y not in g or g[x].nunique() < 2 or g[y].nunique() < 2
        return math.nan if constant else float(g[x].rank().corr(g[y].rank()))

    return pd.DataFrame([{by: key, **{y: rho(g, y) for y in ys}} for key, g in df.groupby(by, sort=False)])


def compare(df: pd.DataFrame, a: str, b: str, metric: str = "hs", on: Sequence[str] = ("p",)) -> pd.DataFrame:
    """``metric`` of method ``a`` minus method ``b`` at each value of ``on`` (mean over seeds)."""
    m = df.groupby(["defense", *on])[metric].mean().unstack("defense")
    if a not in m or b not in m:
        return pd.DataFrame(columns=[*on, a, b, "diff"])
    return m[[a, b]].assign(diff=m[a] - m[b]).reset_index()


def judge_agreement_table(run_dir, judges: Sequence[str] = ("classifier", "probe")) -> dict:
    """``run_agreement`` as ``{"pooled": {kappa, kappa_lo, kappa_hi, agreement, n}, "per_model": DataFrame}`` (one row
    per evaluated model: method, p, seed, HS and mean words under each judge, kappa)."""
    res = run_agreement(run_dir, judges)
    names, rows = res["judges"], []
    for m in res["models"]:
        cfg = m["config"]
        ft = cfg.get("stage", "finetune" if cfg.get("finetune_key") else "align") == "finetune"
        rows.append({"model": cfg.get("method") if ft else f"{cfg.get('align_method')}-aligned",
                     "p": cfg.get("p"), "seed": cfg.get("ft_seed", cfg.get("seed")), "n": m[names[0]]["n"],
                     "mean_words": m[names[0]]["mean_words"], **{f"hs_{n}": m[n]["hs"] for n in names},
                     "kappa": res["per_model_kappa"].get(m["hash"], math.nan), "eval_key": m["hash"]})
    a = res["agreement"] or {}
    lo, hi = a.get("kappa_ci95", [math.nan, math.nan])
    pooled = {"judges": names, "kappa": a.get("kappa", math.nan), "kappa_lo": lo, "kappa_hi": hi,
              "agreement": a.get("agreement", math.nan), "n": a.get("n", 0)}
    df = pd.DataFrame(rows)
    if len(df):
        df = df.sort_values(["model", "p", "seed"], na_position="first").reset_index(drop=True)
    return {"pooled": pooled, "per_model": df}


def notebook_setup(namespace: dict):
    """The cell after a notebook's parameters cell: quiet warnings, pandas display, :func:`from_notebook`, the data
    pools checked, the profile printed. Returns ``(profile, run_dir, figures_dir, tables_dir)``."""
    quiet()
    pd.set_option("display.precision", 2, "display.width", 160)
    ctx = from_notebook(namespace)
    registry.check_pools(ctx.profile)  # sample counts fit the data: fail here, before any stage of the notebook runs
    print(describe_profile(ctx.profile))
    return tuple(ctx)


def quiet() -> None:
    """Silence warnings that clutter notebook outputs (deprecations, CPU pin_memory, tqdm widgets)."""
    for category in (FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    for message in ("pin_memory", "IProgress not found", "TCP without encryption"):
        warnings.filterwarnings("ignore", message=f".*{message}.*")
    transformers.logging.set_verbosity_error()
    logging.getLogger("datasets").setLevel(logging.ERROR)


def _json_object(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) < len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise ConfigError(f"overrides: key(s) {dup} given twice. Fix: keep one of them.")
    return dict(pairs)


#: the plain parameters a notebook's ``parameters`` cell may set
NOTEBOOK_PARAMETERS = ("profile", "seed", "run_dir", "figures_dir", "tables_dir", "overrides")
_KERNEL_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}
_VALIDATED_NAMES: set | None = None


class NotebookContext(NamedTuple):
    profile: Profile
    run_dir: Path
    figures_dir: Path
    tables_dir: Path


def from_notebook(namespace: dict) -> NotebookContext:
    """Validate a notebook's parameters (its globals; :data:`NOTEBOOK_PARAMETERS`; folders None: derived, else inside
    ``runs/`` or ``results/``; ``overrides`` a dict or papermill's JSON/YAML string). Any other name (a misspelt
    papermill ``-p``) is a ConfigError. Sets torch's thread count and the seed."""
    global _VALIDATED_NAMES
    plain = (str, int, float, bool, list, tuple, dict, Path, type(None))
    user = {k: v for k, v in namespace.items() if k[0] != "_" and k not in _KERNEL_NAMES and isinstance(v, plain)}
    # first call in a kernel: every plain global is a parameter; a later re-run ignores names defined by later cells
    candidates = user if _VALIDATED_NAMES is None else {k: v for k, v in user.items() if k in _VALIDATED_NAMES}
    unknown = sorted(k for k in candidates if k not in NOTEBOOK_PARAMETERS)
    if unknown:
        raise ConfigError(f"unknown notebook parameter(s) {', '.join(map(repr, unknown))}; allowed parameters: "
                          f"{', '.join(NOTEBOOK_PARAMETERS)}. Fix: change profile fields through `overrides`, "
                          "e.g. -p overrides '{\"align\": {\"lr\": 0.001}}'.")
    params = {k: v for k, v in user.items() if k in NOTEBOOK_PARAMETERS}
    overrides = params.get("overrides") or {}
    if isinstance(overrides, str):  # papermill -p overrides '{...}' passes a string: JSON (2e-3 is a number), else YAML
        try:
            overrides = json.loads(overrides, object_pairs_hook=_json_object)
        except ValueError as exc:
            if isinstance(exc, ConfigError):
                raise
            overrides = load_yaml(overrides, "overrides") or {}
    overrides = normalise_overrides(overrides)
    if params.get("seed") is not None:
        overrides = {**overrides, "seeds": [params["seed"]]}
    P = load_profile(params.get("profile") or COMMITTED_PROFILE, overrides)
    dirs = {"run_dir": params.get("run_dir") or P.run_dir(),
            "figures_dir": params.get("figures_dir") or P.figures_dir()}
    dirs["tables_dir"] = params.get("tables_dir") or Path(dirs["figures_dir"]) / "tables"
    for param, d in dirs.items():  # every folder is checked before any is created
        if not isinstance(d, (str, Path)):
            raise ConfigError(f"{param}={d!r} must be a folder path (str) or None. Fix: pass a path or leave it None.",
                              param=param)
        check_inside(param, d, P.committed and param != "run_dir")
    for d in dirs.values():
        Path(d).mkdir(parents=True, exist_ok=True)
    if P.threads:
        torch.set_num_threads(P.threads)
    transformers.set_seed(P.seed)
    set_context(profile=P.label, profile_path=P.path, overrides=P.overrides)
    if _VALIDATED_NAMES is None:
        _VALIDATED_NAMES = set(user)
    return NotebookContext(profile=P, **{k: Path(v) for k, v in dirs.items()})

"""One figure style (one seaborn theme, one colour per defense), atomic ``save_fig`` (PDF and PNG without
timestamps: an unchanged figure gives unchanged files) / ``save_table``, and the plot helpers."""

from pathlib import Path
from typing import Iterable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .atomic import atomic_path
from .config import METHODS
from .provenance import keys_and_seeds, record

#: display order of the paper's methods (the method table's order)
DEFENSE_ORDER = tuple(METHODS)
METRIC_LABELS = {
    "hs": "Harmful score (%)", "fa": "Fine-tune accuracy (%)", "refusal": "Refusal rate (%)",
    "label_only": "Label-only answers (%)", "drift": "Harmful embedding drift", "align_loss": "Alignment loss",
    "p": "Harmful ratio p", "n": "Fine-tuning samples n", "rho": r"Perturbation intensity $\rho$", "step": "Step",
    "loss": "Training loss", "vaccine/clean_loss": "Clean (pass-1) loss", "vaccine/grad_norm": "Global norm of dL/de",
    "vaccine/eps_norm": "Perturbation norm", "step_s": "Seconds per step", "peak_memory_gb": "Peak memory (GB)",
}
_FIG_W = 3.3  # inches: one column of a two-column paper


def set_theme() -> None:
    """The project's single plotting theme (importing this module sets it)."""
    sns.set_theme(context="paper", style="whitegrid", palette="colorblind", font_scale=1.0,
                  rc={"figure.dpi": 110, "savefig.dpi": 200, "savefig.bbox": "tight", "axes.titlesize": "medium",
                      "legend.frameon": False, "pdf.fonttype": 42, "svg.hashsalt": "vaccine"})


set_theme()


def palette(names: Iterable[str] = DEFENSE_ORDER) -> dict:
    """A fixed colour for each name (defenses first, in the paper's order, then anything else)."""
    colours = sns.color_palette("colorblind", 10)
    fixed = {"NA": 7, "SFT": 0, "EWC": 1, "Vaccine": 2, "Vlguard": 4, "KL": 5}
    out = {d: colours[i] for d, i in fixed.items()}
    free = [c for i, c in enumerate(colours) if i not in fixed.values()]
    extra = [n for n in names if n not in out]
    return {**out, **{n: free[i % len(free)] for i, n in enumerate(extra)}}


def label(key: str) -> str:
    return METRIC_LABELS.get(key, key)


def defense_order(values: Iterable) -> list:
    """``values`` once each, the paper's methods first in its order."""
    values = list(dict.fromkeys(values))
    known = [d for d in DEFENSE_ORDER if d in values]
    return known + [v for v in values if v not in known]


def save_fig(fig, name: str, out_dir="figures", formats: Sequence[str] = ("pdf", "png"),
             show: bool | None = None, data: pd.DataFrame | None = None) -> list[Path]:
    """Write ``out_dir/name.pdf`` / ``.png`` atomically, close ``fig``, record its provenance (stage keys and seeds of
    ``data``) in ``out_dir/provenance.json``. ``show=None``: display it in a Jupyter kernel (IPython: optional)."""
    out_dir, paths = Path(out_dir), []
    try:
        from IPython import get_ipython
        from IPython.display import display
        if show or (show is None and getattr(get_ipython(), "kernel", None) is not None):
            display(fig)
    except ImportError:
        pass
    meta = {"pdf": {"CreationDate": None, "ModDate": None, "Producer": None, "Creator": None},
            "png": {"Software": None}}
    try:
        for fmt in formats:
            paths.append(out_dir / f"{name}.{fmt}")
            with atomic_path(paths[-1], prefix=".") as tmp:
                fig.savefig(str(tmp), format=fmt, metadata=meta.get(fmt))
    finally:
        plt.close(fig)
    record(out_dir, name, files=[p.name for p in paths], **keys_and_seeds(data))
    return paths


def save_table(df: pd.DataFrame, name: str, out_dir="figures/tables", index: bool = False) -> Path:
    """Write ``out_dir/name.csv`` atomically (floats to 6 significant digits) and record its provenance (stage keys
    and seeds of its rows) in ``out_dir/provenance.json``."""
    target = Path(out_dir) / f"{name}.csv"
    with atomic_path(target, prefix=".") as tmp:
        df.to_csv(str(tmp), index=index, float_format="%.6g")
    record(out_dir, name, rows=len(df), **keys_and_seeds(df))
    return target


def lines(df: pd.DataFrame, x: str, ys: Sequence[str], hue: str | None = "defense"):
    """One panel per metric in ``ys`` vs ``x`` (Fig. 2, Table 1, Fig. 3), one line per ``hue`` (mean, +- SD bars when
    several seeds share a point). Where a group skips an x that others have, its line breaks (no interpolation)."""
    ys = [y for y in ys if y in df.columns]
    fig, axes = plt.subplots(1, max(1, len(ys)), figsize=(_FIG_W * max(1, len(ys)), 2.4), squeeze=False)
    hue_order = defense_order(df[hue]) if hue and hue in df else None
    pal = palette(hue_order) if hue_order else {}
    for ax, y in zip(axes[0], ys):
        data = df.dropna(subset=[y])
        xs = sorted(data[x].unique())
        groups = [(h, data[data[hue] == h]) for h in hue_order] if hue_order else [(None, data)]
        band = bool(len(data)) and data.groupby([x] + ([hue] if hue_order else [])).size().max() > 1  # SD bars
        span = (max(xs) - min(xs)) if len(xs) > 1 else 0.0
        for i, (h, g) in enumerate(groups):
            if g.empty:
                continue
            st = g.groupby(x)[y].agg(["mean", "std"]).reindex(xs)  # NaN where the group has no run: a gap
            dodge = (i - (len(groups) - 1) / 2) * 0.012 * span  # groups side by side, not on top of each other
            ax.errorbar([v + dodge for v in xs], st["mean"], yerr=st["std"].fillna(0.0) if band else None, marker="o",
                        markersize=4, capsize=2.5 if band else 0, color=pal.get(h), label=h)
        ax.set(xlabel=label(x), ylabel=label(y))
    if hue_order:
        axes[0][-1].legend()
    return _finish(fig, None, axes[0][-1])


def _finish(fig, title: str | None, legend_ax=None):
    """Legend outside the last panel, the title above the first, a tight layout."""
    if legend_ax is not None and legend_ax.get_legend() is not None:
        sns.move_legend(legend_ax, "upper left", bbox_to_anchor=(1.02, 1.0), title=None)
    if title:
        fig.axes[0].set_title(title)
    fig.tight_layout()
    return fig


def history_frame(histories: Mapping[str, Sequence[dict]], keys: Sequence[str], x: str = "step") -> pd.DataFrame:
    """Long table (model, x, key, value) of the given keys of Trainer log histories ``{label: log_history}``."""
    rows = [{"model": name, x: rec[x], "key": k, "value": float(rec[k])} for name, hist in histories.items()
            for rec in hist or [] if x in rec for k in keys if rec.get(k) is not None]
    return pd.DataFrame(rows, columns=["model", x, "key", "value"])


def training_curves(histories: Mapping[str, Sequence[dict]], keys: Sequence[str] = ("loss",)):
    """Per-step curves from Trainer log histories ``{label: log_history}``, one panel per key."""
    df = history_frame(histories, keys, "step")
    present = [k for k in keys if k in set(df["key"])] or list(keys[:1])
    fig, axes = plt.subplots(1, len(present), figsize=(_FIG_W * len(present), 2.4), squeeze=False)
    order = defense_order(histories.keys())
    pal = palette(order)
    for ax, k in zip(axes[0], present):
        d = df[df["key"] == k]
        if len(d):
            sns.lineplot(data=d, x="step", y="value", hue="model", hue_order=order, palette=pal, ax=ax,
                         legend=ax is axes[0][-1], errorbar=None)
        ax.set(xlabel=label("step"), ylabel=label(k))
    return _finish(fig, None, axes[0][-1])


def scatter_2d(df: pd.DataFrame, hue: str = "model"):
    """A 2-D embedding scatter of columns x, y (t-SNE of alignment embeddings, paper Fig. 4)."""
    fig, ax = plt.subplots(figsize=(_FIG_W * 1.3, _FIG_W))
    order = defense_order(df[hue]) if len(df) else None
    sns.scatterplot(data=df, x="x", y="y", hue=hue, hue_order=order, palette=palette(order or []),
                    s=14, alpha=0.8, linewidth=0, ax=ax)
    ax.set(xlabel="t-SNE 1", ylabel="t-SNE 2", xticks=[], yticks=[])
    return _finish(fig, None, ax)


def bars(df: pd.DataFrame, x: str, ys: Sequence[str], annotate: str = "{:.2f}",
         ylabels: Mapping[str, str] | None = None):
    """One bar panel per column in ``ys`` (e.g. step time and peak memory per method, Tables 5/10)."""
    ys = [y for y in ys if y in df.columns]
    fig, axes = plt.subplots(1, max(1, len(ys)), figsize=(_FIG_W * max(1, len(ys)), 2.4), squeeze=False)
    order = list(df[x])
    pal = palette(order)
    for ax, y in zip(axes[0], ys):
        sns.barplot(data=df, x=x, y=y, hue=x, order=order, hue_order=order, palette=pal, ax=ax, legend=False)
        for i, v in enumerate(df[y]):
            if pd.notna(v):
                ax.annotate(annotate.format(v), (i, v), ha="center", va="bottom", fontsize="small")
        ax.set(xlabel="", ylabel=(ylabels or {}).get(y, label(y)))
        ax.tick_params(axis="x", rotation=20)
    return _finish(fig, None)


def heat_table(df: pd.DataFrame, title: str | None = None):
    """A numeric table as an annotated heat map (rows x columns), e.g. HS per defense x p."""
    fig, ax = plt.subplots(figsize=(0.8 * df.shape[1] + 1.6, 0.35 * df.shape[0] + 1.0))
    sns.heatmap(df.astype(float), annot=True, fmt=".1f", cmap="rocket_r", cbar=False, ax=ax, linewidths=0.5)
    ax.set(xlabel="", ylabel="")
    return _finish(fig, title)


def mean_sd(df: pd.DataFrame, by: Sequence[str], cols: Sequence[str]) -> pd.DataFrame:
    """Mean and SD over seeds: columns ``<col>`` (mean) and ``<col>_sd`` (0 for a single seed)."""
    cols = [c for c in cols if c in df.columns]
    g = df.groupby(list(by), sort=False)[cols]
    out = g.mean()
    sd = (g.std(ddof=1).fillna(0.0) if len(df) else g.mean()).add_suffix("_sd")
    return pd.concat([out, sd], axis=1).reset_index()


def claims_forest(table: pd.DataFrame, title: str = "Effects with 95 % CI (HS points), per judge"):
    """One horizontal line per (claim, judge): the effect and its 95 % CI, the paper's effect as a cross,
    zero as a dashed line (rows of ``vaccine_lib.claims.evaluate_claims``)."""
    set_theme()
    rows = table.reset_index(drop=True)
    judges = sorted(rows["judge"].unique())
    colors = dict(zip(judges, sns.color_palette("colorblind", len(judges))))
    markers = dict(zip(judges, "osD^vP*X" * (1 + len(judges) // 8)))  # colour and shape tell judges apart
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.2))
    ys = range(len(rows) - 1, -1, -1)
    for y, (_, r) in zip(ys, rows.iterrows()):
        seen = ax.get_legend_handles_labels()[1]
        ax.errorbar(r["effect"], y, xerr=[[r["effect"] - r["ci_lo"]], [r["ci_hi"] - r["effect"]]],
                    fmt=markers[r["judge"]], color=colors[r["judge"]], capsize=3,
                    label=r["judge"] if r["judge"] not in seen else None)
        if np.isfinite(r.get("paper_effect", np.nan)):
            ax.plot(r["paper_effect"], y, "x", color="black", label="paper" if "paper" not in seen else None)
    ax.axvline(0, ls="--", color="grey", lw=1)
    ax.set_yticks(list(ys), [f"{r['claim']} ({r['judge']})" for _, r in rows.iterrows()])
    ax.set_xlabel("effect (HS points)")
    ax.legend()
    return _finish(fig, title, ax)

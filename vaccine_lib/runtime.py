"""Measured runtime of a profile's run (each stage's own time from its ``metrics.json``, each notebook's from
``timings.json``, so a run resumed across sessions still gives a cold run's cost; ``J`` workers need at least
``sum / J``), as a committed table and the README block generated from it.

    python -m vaccine_lib.runtime --profile default            # -> figures/tables/runtime.csv + README block
    python -m vaccine_lib.runtime --check-readme               # exit 1 when README and table disagree"""

import argparse
import json
import math
from pathlib import Path

import pandas as pd

from . import readme as RM
from .atomic import atomic_write_text
from .cli import arg_int, errors_as_exit
from .errors import ConfigError
from .paths import REPO_ROOT
from .profiles import load_profile
from .provenance import provenance
from .registry import KIND_NAMES, plan

DEFAULT_TABLE = REPO_ROOT / "figures" / "tables" / "runtime.csv"
BEGIN, END = RM.markers("runtime")
#: the GPU run whose measured unit costs scale the CPU medians into a GPU profile's estimate (issue 18's first run)
GPU_RUN = REPO_ROOT / "figures" / "tables" / "fair_test_gpu1"
#: the metrics.json field holding a stage's own measured seconds
SECONDS_FIELD = {"align": "train_seconds", "finetune": "train_seconds", "eval": "eval_seconds", "drift": "seconds"}
COLUMNS = ["part", "count", "timed", "total_s", "median_s", "min_s", "max_s"]


def _rate(kind: str, m: dict) -> float | None:
    """A stage's unit cost: seconds per training step, or per evaluated item."""
    if kind in ("align", "finetune"):
        return m.get("seconds_per_step")
    items = sum(m.get(k) or 0 for k in ("hs_n", "fa_n", "n_benign"))
    return m["eval_seconds"] / items if kind == "eval" and m.get("eval_seconds") and items else None


def stage_seconds(stages, run_dir) -> pd.DataFrame:
    """One row per planned stage: kind, label, key, seconds and rate (:func:`_rate`; NaN where none)."""
    rows = []
    for s in stages:
        metrics = s.path(run_dir) / "metrics.json"
        m = json.loads(metrics.read_text(encoding="utf-8")) if metrics.is_file() else {}
        value, rate = m.get(SECONDS_FIELD[s.kind]), _rate(s.kind, m)
        rows.append({"kind": s.kind, "label": s.label, "key": s.key, "seconds": math.nan if value is None else
                     float(value), "rate": math.nan if rate is None else float(rate)})
    return pd.DataFrame(rows, columns=["kind", "label", "key", "seconds", "rate"])


def _summary(part: str, seconds: pd.Series) -> dict:
    timed = seconds.dropna()
    stat = (lambda f: round(float(f(timed)), 1)) if len(timed) else (lambda f: math.nan)
    return {"part": part, "count": len(seconds), "timed": len(timed),
            "total_s": round(float(timed.sum()), 1), "median_s": stat(pd.Series.median),
            "min_s": stat(pd.Series.min), "max_s": stat(pd.Series.max)}


def runtime_table(per_stage: pd.DataFrame, notebooks: list[dict] | None = None, jobs: int = 2) -> pd.DataFrame:
    """Per stage kind: count, timed, total / median / min / max seconds; then the notebooks (stages excluded) and
    two totals: ``stages / jobs`` (the least wall time of ``jobs`` workers) and the cold run (+ the notebooks)."""
    if jobs < 1:
        raise ConfigError(f"jobs = {jobs}: must be >= 1 (the number of worker processes)")
    rows = [_summary(KIND_NAMES[k], per_stage.loc[per_stage["kind"] == k, "seconds"])
            for k in SECONDS_FIELD if (per_stage["kind"] == k).any()]
    stages = _summary("all stages (worker-seconds)", per_stage["seconds"])
    nb = pd.Series([r.get("notebook_seconds", math.nan) for r in notebooks or []], dtype=float)
    least = {"part": f"stages / {jobs} workers (least wall time)", "count": stages["count"], "timed": stages["timed"],
             "total_s": round(stages["total_s"] / jobs, 1)}  # a column a row leaves out is NaN in the frame
    rows += [stages, _summary("notebooks", nb), least]
    rows.append({**least, "part": f"cold make reproduce, {jobs} workers (least)", "count": stages["count"] + len(nb),
                 "timed": stages["timed"] + int(nb.notna().sum()),
                 "total_s": round(least["total_s"] + float(nb.dropna().sum()), 1)})
    return pd.DataFrame(rows, columns=COLUMNS)


def estimate_row(name: str, kinds: list[str], per_stage: pd.DataFrame, jobs: int = 2, scale: dict | None = None,
                 where: str = "") -> dict:
    """An *estimate* for another profile on the same model: its stage count per kind x this run's median (x
    ``scale[kind]`` for another machine) / ``jobs`` (notebooks excluded; NaN when a kind was never timed here)."""
    medians = per_stage.dropna(subset=["seconds"]).groupby("kind")["seconds"].median()
    counts = pd.Series(kinds, dtype=object).value_counts()
    total = sum(float(medians.get(k, math.nan)) * (scale or {}).get(k, 1.0) * int(n) for k, n in counts.items())
    return {"part": f"estimate: {name} profile stages{where} / {jobs} workers (medians above x "
                    + ("measured GPU/CPU rate ratios " + ", ".join(f"{KIND_NAMES[k]} {v:.3f}" for k, v in scale.items())
                       + " x " if scale else "") + "its "
                    + ", ".join(f"{int(counts.get(k, 0))} {KIND_NAMES[k]}" for k in SECONDS_FIELD) + ")",
            "count": int(counts.sum()), "timed": 0, "total_s": round(total / jobs, 1)}


def gpu_scale(per_stage: pd.DataFrame, gpu_dir=GPU_RUN) -> tuple[dict, int, str]:
    """(GPU/CPU ratios of the median unit costs, workers, device) between a GPU run (scripts/fair_test.py's
    ``rows.jsonl`` and ``summary.json``) and this CPU run: alignment on SFT stages only (Vaccine's two passes
    cost the same factor on both); drift takes fine-tuning's (no GPU drift stage was timed)."""
    gpu_dir = Path(gpu_dir)
    rows = [json.loads(x) for x in (gpu_dir / "rows.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]
    gpu = pd.DataFrame([{"kind": k, "sft": r.get("method") == "sft", "rate": _rate(k, r)} for r in rows
                        for k in ({"align": "align", "ft": "finetune"}.get(r["kind"]), "eval") if k]).dropna()
    cpu = per_stage.assign(sft=per_stage["label"].str.startswith("SFT")).dropna(subset=["rate"])
    def median(df, kind):  # alignment: SFT stages only
        d = df[df["kind"] == kind]
        return d.loc[d["sft"] | (kind != "align"), "rate"].median()
    ratio = {k: float(median(gpu, k) / median(cpu, k)) for k in ("align", "finetune", "eval")}
    device = next((r["device"] for r in rows if r.get("device")), "GPU")
    return {**ratio, "drift": ratio["finetune"]}, int(json.loads((gpu_dir / "summary.json").read_text())["workers"]), device


def write_runtime(P, jobs: int = 2, table=DEFAULT_TABLE, conditions: str | None = None) -> pd.DataFrame:
    """Write the runtime table (CSV + JSON) of profile ``P`` from its stage cache and ``timings.json``, with the
    last complete run's wall time and estimates for the full profiles; ``conditions``: how the times were taken."""
    per_stage = stage_seconds(plan(P), P.run_dir())
    timings = P.results_dir() / "timings.json"
    summary = json.loads(timings.read_text(encoding="utf-8")) if timings.is_file() else {}
    notebooks = summary.get("notebooks", [])
    df = runtime_table(per_stage, notebooks, jobs)
    if summary.get("complete_run"):
        run = summary["complete_run"]
        df.loc[len(df)] = {"part": f"measured: the last complete make reproduce, {run['jobs']} workers (wall)",
                           "count": df.iloc[-1]["count"], "timed": 1, "total_s": run["seconds"]}
    others = [load_profile(name) for name in ("full", "full_gpu")]
    extra = []
    for o in (o for o in others if o.model == P.model and o.name != P.name):
        if o.device != "cuda":
            extra.append(estimate_row(o.name, [s.kind for s in plan(o)], per_stage, jobs))
        elif (GPU_RUN / "rows.jsonl").is_file():
            scale, workers, device = gpu_scale(per_stage)
            extra.append(estimate_row(o.name, [s.kind for s in plan(o)], per_stage, workers, scale, f" on one {device}"))
    if extra:
        df = pd.concat([df, pd.DataFrame(extra, columns=COLUMNS)], ignore_index=True)
    table = Path(table)
    atomic_write_text(table, df.to_csv(index=False))
    meta = {"profile": P.label, "jobs": jobs, "conditions": conditions, "stages": per_stage.to_dict(orient="records"),
            "notebooks": notebooks, "provenance": provenance()}
    atomic_write_text(table.with_suffix(".json"), json.dumps(meta, indent=1, default=str) + "\n")
    return df


def read_table(table=DEFAULT_TABLE) -> tuple[pd.DataFrame, dict]:
    table = Path(table)
    if not table.is_file():
        raise ConfigError(f"{table} does not exist: run python -m vaccine_lib.runtime --profile default first")
    meta = table.with_suffix(".json")
    return pd.read_csv(table), (json.loads(meta.read_text(encoding="utf-8")) if meta.is_file() else {})


def _fmt(s: float) -> str:
    return "-" if s != s else f"{s:,.0f} s" + (f" ({s / 3600:.1f} h)" if s >= 3600 else "")  # s != s: NaN


def render_block(df: pd.DataFrame, meta: dict | None = None) -> str:
    meta = meta or {}
    prov = meta.get("provenance", {})
    hw = prov.get("hardware", {})
    origin = ", ".join(x for x in (f"profile {meta['profile']}" if meta.get("profile") else "",
                                   f"commit {str(prov.get('commit') or '')[:10]}" if prov.get("commit") else "",
                                   f"{hw['cpu_count']} CPU cores" if hw.get("cpu_count") else "") if x)
    header = ("Generated by `python -m vaccine_lib.runtime` from `figures/tables/runtime.csv`"
              + (f" ({origin})" if origin else "") + "; do not edit by hand. Each stage's own measured time "
              "(one torch thread per worker; for alignment and fine-tuning the training loop alone), summed over "
              "the run's stages; `timed` counts the stages that recorded one."
              + (f" Conditions: {meta['conditions']}" if meta.get("conditions") else ""))
    rows = [(r.part, r.count, r.timed, *map(_fmt, (r.total_s, r.median_s, r.min_s, r.max_s)))
            for r in df.itertuples(index=False)]
    return RM.render("runtime", header, RM.md_table(["part", "stages", "timed", "total", "median", "min", "max"], rows))


def render_readme(readme=RM.README, table=DEFAULT_TABLE) -> bool:
    """Replace the README's runtime block with the table's rendering; True when the file changed."""
    return RM.replace(readme, "runtime", render_block(*read_table(table)))


def readme_matches(readme=RM.README, table=DEFAULT_TABLE) -> bool:
    return RM.block(readme, "runtime") == render_block(*read_table(table))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vaccine_lib.runtime", description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", help="build the table from this profile's stage cache and timings.json")
    ap.add_argument("--jobs", type=arg_int("--jobs", 1, 64, 2), default=2,
                    help="worker processes the least wall time assumes (1..64, default 2)")
    ap.add_argument("--table", default=str(DEFAULT_TABLE))
    ap.add_argument("--conditions", help="how the times were taken, shown above the README table (e.g. quiet: "
                    "nothing else ran on the machine)")
    ap.add_argument("--readme", default=str(RM.README))
    ap.add_argument("--check-readme", action="store_true", help="exit 1 if the README block and the table disagree")
    args = ap.parse_args(argv)
    with errors_as_exit(ap):
        if args.check_readme:
            ok = readme_matches(args.readme, args.table)
            print("README runtime block matches the table" if ok else "README runtime block differs from the table")
            return 0 if ok else 1
        if args.profile:
            print(write_runtime(load_profile(args.profile), args.jobs, args.table, conditions=args.conditions)
                  .to_string(index=False))
        print("README runtime block " + ("updated" if render_readme(args.readme, args.table) else "unchanged"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

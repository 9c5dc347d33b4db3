"""Issue 17's equivalence check of bf16 autocast: the default profile's fine-tuning stage in fp32 and under bf16
autocast (fp32 master and LoRA weights), same alignment, same seeds; evaluation in fp32 for both. The issue's bar:
HS / FA differences within the seed-to-seed SD, loss curves within 1 %.

    python scripts/bf16_equivalence.py run sft 42 43 44          # stages cached under runs/bf16_equivalence/
    python scripts/bf16_equivalence.py table sft 42 43 44        # figures/tables/bf16_equivalence*.csv
    python scripts/bf16_equivalence.py runs 601307d              # the committed fp32 default run (Table 1 at that
                                                                  # commit) vs the committed bf16 one, every model

Only where the host has bf16 units (``vaccine_lib.hardware``); elsewhere bf16 is refused with the reason.
"""

from __future__ import annotations

import io
import statistics
import subprocess
import sys

import pandas as pd
from scipy import stats

from vaccine_lib.paths import REPO_ROOT
from vaccine_lib.plotting import save_table
from vaccine_lib.profiles import load_profile
from vaccine_lib.registry import finetune_config
from vaccine_lib.stages import evaluate, finetune

RUN = REPO_ROOT / "runs" / "bf16_equivalence"
TABLES = REPO_ROOT / "figures" / "tables"
LABELS = {"sft": "SFT", "vaccine": "Vaccine"}


def stage(method: str, seed: int, autocast: str):
    P = load_profile("default")
    cfg = finetune_config(P, LABELS[method], seed=seed)  # the default p*, shared fp32 alignment
    return P, cfg.with_(autocast=autocast, drift_every=0, drift_samples=16)  # no drift log: training only


def measure(method: str, seed: int, autocast: str) -> dict:
    P, cfg = stage(method, seed, autocast)
    res = finetune(cfg, RUN)
    m = evaluate(cfg, P.eval, RUN)
    losses = [e["loss"] for e in res.log_history if "loss" in e]
    return {"method": LABELS[method], "seed": seed, "autocast": autocast, "hs": m["hs"], "fa": m["fa"],
            "final_loss": res.metrics["final_loss"], "train_loss": res.metrics["train_loss"],
            "seconds_per_step": res.metrics["seconds_per_step"], "losses": losses, "stage_key": res.key}


def table(methods=("sft",), seeds=(42, 43, 44)) -> pd.DataFrame:
    rows = [measure(m, s, a) for m in methods for s in seeds for a in ("off", "bf16")]
    out = []
    for m in {r["method"] for r in rows}:
        for s in seeds:
            a, b = (next(r for r in rows if r["method"] == m and r["seed"] == s and r["autocast"] == x) for x in ("off", "bf16"))
            rel = max(abs(x - y) / max(abs(x), 1e-8) for x, y in zip(a["losses"], b["losses"]))
            out.append({"method": m, "seed": s, "hs_fp32": a["hs"], "hs_bf16": b["hs"], "fa_fp32": a["fa"],
                        "fa_bf16": b["fa"], "hs_diff": b["hs"] - a["hs"], "fa_diff": b["fa"] - a["fa"],
                        "loss_max_rel_diff": round(rel, 5), "mean_loss_rel_diff": round(
                            abs(b["train_loss"] - a["train_loss"]) / a["train_loss"], 5),
                        "s_per_step_fp32": a["seconds_per_step"], "s_per_step_bf16": b["seconds_per_step"]})
    df = pd.DataFrame(out)
    summary = []
    for m, g in df.groupby("method"):
        sd_hs, sd_fa = statistics.stdev(g["hs_fp32"]), statistics.stdev(g["fa_fp32"])
        summary.append({"method": m, "seeds": len(g), "mean_hs_diff": g["hs_diff"].mean(), "sd_hs_fp32_seeds": sd_hs,
                        "mean_fa_diff": g["fa_diff"].mean(), "sd_fa_fp32_seeds": sd_fa,
                        "max_train_loss_rel_diff": g["mean_loss_rel_diff"].max(),
                        "hs_within_seed_sd": abs(g["hs_diff"].mean()) <= sd_hs,
                        "fa_within_seed_sd": abs(g["fa_diff"].mean()) <= sd_fa,
                        "loss_within_1pct": bool(g["mean_loss_rel_diff"].max() <= 0.01)})
    save_table(df, "bf16_equivalence", TABLES)
    save_table(pd.DataFrame(summary), "bf16_equivalence_summary", TABLES)
    return df


def runs(fp32_commit: str) -> pd.DataFrame:
    """Every fine-tuned model of two complete default runs: Table 1 as committed at ``fp32_commit`` (fp32 fine-tuning)
    against the working tree's (bf16 autocast + answer-only head), paired by (defense, p, seed); the alignments and
    the fp32 evaluation are the same stages in both (equal keys). Per (defense, p): mean difference against the fp32
    seed-to-seed SD, for HS and FA."""
    name = "figures/tables/table1_defenses.csv"
    old = pd.read_csv(io.StringIO(subprocess.run(["git", "show", f"{fp32_commit}:{name}"], cwd=REPO_ROOT, check=True,
                                                 capture_output=True, text=True).stdout), keep_default_na=False, na_values=[""])
    new = pd.read_csv(REPO_ROOT / name, keep_default_na=False, na_values=[""])  # "NA" is Non-Aligned, not missing
    key = ["defense", "p", "seed"]
    pairs = old.drop_duplicates(key).merge(new.drop_duplicates(key), on=key, suffixes=("_fp32", "_bf16"))
    out = []
    for (d, p), g in pairs.groupby(["defense", "p"]):
        row = {"defense": d, "p": p, "seeds": len(g)}
        for m in ("hs", "fa"):
            diff, sd = (g[f"{m}_bf16"] - g[f"{m}_fp32"]).mean(), statistics.stdev(g[f"{m}_fp32"]) if len(g) > 1 else float("nan")
            row |= {f"{m}_fp32": g[f"{m}_fp32"].mean(), f"{m}_bf16": g[f"{m}_bf16"].mean(), f"{m}_diff": round(diff, 3),
                    f"{m}_sd_fp32_seeds": round(sd, 3), f"{m}_within_seed_sd": bool(abs(diff) <= sd)}
        out.append(row)
    pooled = {"defense": "all pairs", "p": float("nan"), "seeds": len(pairs)}
    for m in ("hs", "fa"):  # every model pair at once: a t-interval of the mean difference (a systematic shift)
        d = pairs[f"{m}_bf16"] - pairs[f"{m}_fp32"]
        half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / len(d) ** 0.5
        pooled |= {f"{m}_fp32": pairs[f"{m}_fp32"].mean(), f"{m}_bf16": pairs[f"{m}_bf16"].mean(),
                   f"{m}_diff": round(d.mean(), 3), f"{m}_diff_ci_lo": round(d.mean() - half, 3),
                   f"{m}_diff_ci_hi": round(d.mean() + half, 3)}
    df = pd.DataFrame(out + [pooled])
    save_table(df, "bf16_equivalence_runs", TABLES)
    return df


def main(argv: list[str]) -> int:
    if argv[:1] == ["runs"] and len(argv) == 2:
        print(runs(argv[1]).to_string(index=False))
        return 0
    if argv[:1] == ["run"] and len(argv) >= 3:
        for s in argv[2:]:
            for a in ("off", "bf16"):
                r = measure(argv[1], int(s), a)
                print(f"{r['method']} seed {s} {a}: HS {r['hs']} FA {r['fa']} final loss {r['final_loss']:.4f} "
                      f"({r['seconds_per_step']} s/step)", flush=True)
        return 0
    if argv[:1] == ["table"]:  # table [METHOD [SEED ...]]: every (seed, precision) of the method must be cached
        seeds = tuple(int(s) for s in argv[2:]) or (42, 43, 44)
        print(table(tuple(argv[1:2]) or ("sft",), seeds).to_string(index=False))
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

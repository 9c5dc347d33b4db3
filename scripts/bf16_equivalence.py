"""Issue 17's equivalence check of bf16 autocast: the default profile's fine-tuning stage in fp32 and under bf16
autocast (fp32 master and LoRA weights), same alignment, same seeds; evaluation in fp32 for both. The issue's bar:
HS / FA differences within the seed-to-seed SD, loss curves within 1 %.

    python scripts/bf16_equivalence.py run sft 42 43 44          # stages cached under runs/bf16_equivalence/
    python scripts/bf16_equivalence.py run vaccine 42 43 44      # the Vaccine-aligned stage (session 10)
    python scripts/bf16_equivalence.py table sft,vaccine 42 43 44  # figures/tables/bf16_equivalence*.csv
    python scripts/bf16_equivalence.py runs 601307d              # the committed fp32 default run (Table 1 at that
                                                                  # commit) vs the committed bf16 one, every model
    python scripts/bf16_equivalence.py evals runs/default_fp32eval  # evaluation: the same models generated in fp32
                                                                  # (batch 16, OLD run folder) and under bf16
                                                                  # autocast (batch 64, runs/default)

Both methods' rows (session 10) use the default's fine-tuning config, answer-only head included; session 8's SFT
rows, trained before that head entered the config, gave the same HS and FA.

Only where the host has bf16 units (``vaccine_lib.hardware``); elsewhere bf16 is refused with the reason.
"""

from __future__ import annotations

import io
import json
import statistics
import subprocess
import sys

import pandas as pd
from scipy import stats

from vaccine_lib.evaluation.agreement import rejudge, summarise
from vaccine_lib.judge import get_judge
from vaccine_lib.paths import REPO_ROOT
from vaccine_lib.plotting import save_table
from vaccine_lib.profiles import load_profile
from vaccine_lib.registry import finetune_config, label_of, plan
from vaccine_lib.stage_cache import eval_key, stage_dir
from vaccine_lib.stages import evaluate, finetune, method_label

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


def _adapter_digest(folder) -> str:
    """The adapter weights' sha256 as the stage cache recorded it (``done.json``): equal digests = the same trained
    model in both runs (the adapter config is left out: peft writes its target-module set in an order that changes
    from process to process)."""
    return json.loads((folder / "done.json").read_text())["files"]["adapter/adapter_model.safetensors"]["sha256"]


def _read_eval(folder) -> tuple[dict, list[dict]]:
    gens = [json.loads(x) for x in (folder / "generations.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]
    return json.loads((folder / "metrics.json").read_text()), gens


def evals(old_run: str, new_run: str = "runs/default") -> pd.DataFrame:
    """Issue 17's check of evaluation under bf16 autocast: every model of the default plan evaluated twice, as
    ``old_run`` stored it (fp32 generation, batch 16: the key without ``autocast``) and as ``new_run`` does (the
    profile's ``autocast`` / ``batch_size``); the models themselves are the same stages (adapter digests compared).
    Per model: HS under each judge, FA, benign refusal and the share of identical harmful answers; per (model
    kind, p): the mean difference against the fp32 seed-to-seed SD; pooled: a t-interval of each difference."""
    P = load_profile("default")
    old_eval = P.eval.with_(autocast="off", batch_size=16)
    old_dir, new_dir = REPO_ROOT / old_run, REPO_ROOT / new_run
    judges = {j: get_judge(j) for j in P.eval.rejudge}
    rows, missing = [], 0
    for s in (x for x in plan(P, run_dir=new_dir) if x.kind == "eval"):
        kind = "finetune" if hasattr(s.cfg, "defense") else "align"
        stages = [stage_dir(d, kind, s.cfg) for d in (old_dir, new_dir)]
        folders = [stage_dir(old_dir, "eval", eval_key(s.cfg, old_eval, s.tasks)), stage_dir(new_dir, "eval", s.key)]
        if not all((f / "done.json").is_file() for f in folders):
            missing += 1
            continue
        (m0, g0), (m1, g1) = (_read_eval(f) for f in folders)
        h0, h1 = ([g for g in g if g.get("part") == "harmful"] for g in (g0, g1))
        row = {"model": label_of(s.cfg) if kind == "finetune" else f"{method_label(s.cfg)}-aligned seed={s.cfg.seed}",
               "defense": method_label(s.cfg) + ("" if kind == "finetune" else "-aligned"),
               "p": s.cfg.p if kind == "finetune" else float("nan"), "seed": s.cfg.seed,
               "same_model": _adapter_digest(stages[0]) == _adapter_digest(stages[1]),
               "generation_dtype": m1.get("generation_dtype", "fp32"),
               "identical_answers": round(sum(a["answer"] == b["answer"] for a, b in zip(h0, h1)) / len(h0), 4),
               "hs_fp32": m0["hs"], "hs_bf16": m1["hs"], "fa_fp32": m0.get("fa"), "fa_bf16": m1.get("fa"),
               "benign_refusal_fp32": m0.get("benign_refusal"), "benign_refusal_bf16": m1.get("benign_refusal"),
               "eval_seconds_fp32": m0["eval_seconds"], "eval_seconds_bf16": m1["eval_seconds"]}
        for name, judge in judges.items():
            row[f"hs_{name}_fp32"], row[f"hs_{name}_bf16"] = (summarise(rejudge(h, judge))["hs"] for h in (h0, h1))
        rows.append(row)
    if missing:
        print(f"{missing} evaluation(s) not finished in both runs: left out", file=sys.stderr)
    df = pd.DataFrame(rows)
    metrics = ["hs", *(f"hs_{j}" for j in judges), "fa", "benign_refusal"]
    out = []
    for (d, p), g in df.groupby(["defense", "p"], dropna=False):
        r = {"defense": d, "p": p, "models": len(g)}
        for m in metrics:
            diff, sd = (g[f"{m}_bf16"] - g[f"{m}_fp32"]).mean(), g[f"{m}_fp32"].std(ddof=1) if len(g) > 1 else float("nan")
            r |= {f"{m}_diff": round(diff, 3), f"{m}_sd_fp32_seeds": round(sd, 3),
                  f"{m}_within_seed_sd": bool(abs(diff) <= sd) if sd == sd else None}
        out.append(r)
    pooled = {"defense": "all models", "p": float("nan"), "models": len(df)}
    for m in metrics:
        d = df[f"{m}_bf16"] - df[f"{m}_fp32"]
        half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / len(d) ** 0.5
        pooled |= {f"{m}_diff": round(d.mean(), 3), f"{m}_diff_ci_lo": round(d.mean() - half, 3),
                   f"{m}_diff_ci_hi": round(d.mean() + half, 3)}
    pooled["identical_answers"] = round(df["identical_answers"].mean(), 4)
    pooled["eval_seconds_ratio"] = round(df["eval_seconds_bf16"].sum() / df["eval_seconds_fp32"].sum(), 3)
    save_table(df, "bf16_eval_equivalence", TABLES)
    save_table(pd.DataFrame(out + [pooled]), "bf16_eval_equivalence_summary", TABLES)
    return df


def main(argv: list[str]) -> int:
    if argv[:1] == ["evals"] and len(argv) in (2, 3):
        print(evals(*argv[1:]).to_string(index=False))
        return 0
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
    if argv[:1] == ["table"]:  # table [METHOD[,METHOD] [SEED ...]]: every (seed, precision) of the method must be cached
        seeds = tuple(int(s) for s in argv[2:]) or (42, 43, 44)
        print(table(tuple(argv[1].split(",")) if argv[1:] else ("sft",), seeds).to_string(index=False))
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

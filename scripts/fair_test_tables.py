"""The fair test's committed tables (``figures/tables/fair_test_*.csv``) from the protocol's rows and decisions
(``scripts/fair_test.py run`` writes ``rows.jsonl``, ``decisions.json`` and ``summary.json`` into its ``--out``).
No harmful text enters them: per-prompt verdicts are 0/1 strings in ``fair_test_verdicts.csv``."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from vaccine_lib.paths import REPO_ROOT
from vaccine_lib.plotting import save_table

TABLES = REPO_ROOT / "figures" / "tables"
JUDGES = ("threeway", "classifier", "probe", "ensemble")  # the fair_test profile's judge + re-judges


def model_columns(judges) -> tuple:
    return ("tag", "kind", "label", "method", "seed", "rho", "perturbation", "budget", "epochs", "attack", "p",
            "hs", *(f"hs_{j}" for j in judges), *(f"refused_{j}" for j in judges), *(f"off_topic_{j}" for j in judges),
            "hs_n", "fa", "fa_n", "fa_top_answer_share", "benign_refusal",
                 "mean_words", "align_loss", "train_loss", "final_loss", "drift_per_token", "drift_align_loss", "steps",
            "seconds_per_step", "train_seconds", "eval_seconds", "seconds", "stage_key", "eval_key", "device")


def model_label(r: dict) -> str:
    if r.get("label"):
        return r["label"]
    return {"none": "NA", "sft": "SFT", "vaccine": "Vaccine"}.get(r.get("method"), r.get("method", ""))


def write_tables(rows_file: Path, tables: Path = TABLES) -> dict[str, pd.DataFrame]:
    folder = Path(rows_file).parent
    rows = [json.loads(line) for line in Path(rows_file).read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r.get("kind") in ("align", "ft")]
    decisions = json.loads((folder / "decisions.json").read_text())
    summary = json.loads((folder / "summary.json").read_text()) if (folder / "summary.json").exists() else {}
    out: dict[str, pd.DataFrame] = {}
    judges = [j for j in JUDGES if any(f"bits_{j}" in r for r in rows)] + \
        sorted({k[5:] for r in rows for k in r if k.startswith("bits_")} - set(JUDGES))
    models = pd.DataFrame([{**{c: r.get(c) for c in model_columns(judges)}, "label": model_label(r),
                            "perturbation": r.get("perturbation", "gradient") if r.get("method") == "vaccine" else None,
                            "budget": r.get("budget", "global") if r.get("method") == "vaccine" else None,
                            "stage": "aligned" if r["kind"] == "align" else "finetuned"} for r in rows])
    out["fair_test_models"] = models.sort_values(["stage", "label", "tag"]).reset_index(drop=True)
    out["fair_test_verdicts"] = pd.DataFrame([{"tag": r["tag"], "judge": j, "verdicts": r[f"bits_{j}"]}
                                              for r in rows for j in judges if r.get(f"bits_{j}")])
    curves = [{"tag": r["tag"], "label": model_label(r), "rho": r.get("rho"), "epochs": r.get("epochs"),
               "epoch": i + 1, "mean_loss": v} for r in rows if r.get("epoch_loss") for i, v in enumerate(r["epoch_loss"])]
    out["fair_test_curves"] = pd.DataFrame(curves)
    if "epochs" in decisions:
        out["fair_test_plateau"] = pd.DataFrame(decisions["epochs"]["rows"]).assign(chosen=decisions["epochs"]["epochs"])
    if "rho" in decisions:
        out["fair_test_rho"] = pd.DataFrame(decisions["rho"]["rows"]).assign(rho_star=decisions["rho"]["rho_star"])
        share = [{"rho": r.get("rho"), "perturbation": r.get("perturbation", "gradient"), "budget": r.get("budget", "global"),
                  "seed": r.get("seed"), "layer": i, "share": s}
                 for r in rows if r["kind"] == "align" and r.get("eps_layer_share") for i, s in enumerate(r["eps_layer_share"])]
        out["fair_test_layer_share"] = pd.DataFrame(share)
    if "attack" in decisions:
        out["fair_test_attack"] = pd.DataFrame(decisions["attack"]["rows"]).assign(chosen=decisions["attack"]["attack"])
    if "power" in decisions:
        out["fair_test_power"] = pd.DataFrame([decisions["power"]])
    out["fair_test_run"] = pd.DataFrame([{"seconds": summary.get("seconds"), "workers": summary.get("workers"),
                                          "tasks_done": summary.get("done"), "tasks_failed": len(summary.get("failed", {})),
                                          "tasks_not_run": len(summary.get("not_run", [])),
                                          "device": next((r.get("device") for r in rows if r.get("device")), None),
                                          "failed": "; ".join(sorted(summary.get("failed", {}))),
                                          "not_run": "; ".join(summary.get("not_run", []))}])
    for name, df in out.items():
        save_table(df, name, tables)
    return out

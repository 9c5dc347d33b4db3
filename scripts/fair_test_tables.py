"""The fair test's committed tables (``figures/tables/fair_test_*.csv``) from the protocol's rows and decisions
(``scripts/fair_test.py run`` writes ``rows.jsonl``, ``decisions.json`` and ``summary.json`` into its ``--out``).
No harmful text enters them: per-prompt verdicts are 0/1 strings in ``fair_test_verdicts.csv``."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from vaccine_lib.claims.regime import R4_ERASE, erase_fraction
from vaccine_lib.paths import REPO_ROOT
from vaccine_lib.plotting import save_table
from vaccine_lib.readme import md_table, render, replace

ATTACKS = {"A0": (5e-4, 2), "A1": (2e-4, 2), "A2": (1e-4, 2), "A3": (5e-5, 2), "A4": (1e-4, 5), "A5": (5e-5, 5)}
DOC = REPO_ROOT / "docs" / "fair_test.md"

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
    else:  # the protocol stopped before every candidate ran: what the finished ones show, no decision
        out["fair_test_attack"] = attack_pilot(rows)
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
    if Path(tables).resolve() == TABLES.resolve():
        render_doc(out)
    return out


def attack_pilot(rows: list[dict]) -> pd.DataFrame:
    """Per attack candidate: Non-Aligned at p = 0.1, SFT (seed 42) at p = 0 and 0.1, and R4's erase fraction where
    all three ran (the protocol's choice needs every candidate; this table says what the finished ones show)."""
    by = {r["tag"]: r for r in rows}
    out = []
    for a, (lr, epochs) in ATTACKS.items():
        na, sft, clean = (by.get(t, {}) for t in (f"ft-NA-{a}-p0.1", f"ft-SFT-{a}-p0.1-s42", f"ft-SFT-{a}-p0.0-s42"))
        frac = erase_fraction(sft["hs"], clean["hs"], na["hs"]) if na and sft and clean else None
        out.append({"attack": a, "lr": lr, "epochs": epochs, "hs_na": na.get("hs"), "hs_sft": sft.get("hs"),
                    "hs_sft_clean": clean.get("hs"), "fa_clean": clean.get("fa"),
                    "fa_top_share": clean.get("fa_top_answer_share"), "fa_sft": sft.get("fa"),
                    "erase_fraction": None if frac is None else round(frac, 4),
                    "in_R4_band": None if frac is None else bool(R4_ERASE[0] <= frac <= R4_ERASE[1]),
                    "chosen": None})
    return pd.DataFrame(out)


def _fmt(v, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "not run"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def render_doc(out: dict[str, pd.DataFrame], doc: Path = DOC) -> None:
    """The generated block of docs/fair_test.md (``<!-- fair_test:begin -->``) from the tables just written."""
    parts = []
    run = out["fair_test_run"].iloc[0]
    parts.append(f"Run: {run['tasks_done']} tasks done, {run['tasks_failed']} failed, {run['tasks_not_run']} not run "
                 f"in {run['seconds']} s with {run['workers']} worker processes on {run['device']}.")
    if "fair_test_plateau" in out:
        pl = out["fair_test_plateau"]
        parts.append("Step 1, alignment length (SFT seed 42; `fair_test_plateau.csv`): chosen "
                     f"**{int(pl['chosen'].iloc[0])} epochs**.\n\n" + md_table(
                         ["epochs", "last-epoch mean loss", "change vs the epoch before", "plateau (< 2 %)"],
                         [[int(r.epochs), f"{r.last_epoch_loss:.4f}", f"{100 * r.last_epoch_change:.1f} %",
                           "yes" if r.plateau else "no"] for r in pl.itertuples()]))
    m = out["fair_test_models"]
    al = m[m["stage"] == "aligned"].dropna(subset=["hs"])
    parts.append("Aligned models, before fine-tuning (`fair_test_models.csv`; HS by threeway / classifier / probe / "
                 "ensemble):\n\n" + md_table(
                     ["model", "epochs", "HS", "HS classifier", "HS probe", "HS ensemble", "zero-shot FA",
                      "benign refusal", "alignment loss"],
                     [[r.tag, _fmt(r.epochs, 0), _fmt(r.hs), _fmt(r.hs_classifier), _fmt(r.hs_probe),
                       _fmt(r.hs_ensemble), _fmt(r.fa), _fmt(r.benign_refusal), _fmt(r.align_loss, 3)]
                      for r in al.itertuples()]))
    if "fair_test_rho" in out:
        rho = out["fair_test_rho"]
        parts.append(f"Step 2, rho* = {rho['rho_star'].iloc[0]}\n\n" + md_table(list(rho.columns), rho.values.tolist()))
    else:
        parts.append("Step 2 (rho*): not reached; no Vaccine alignment finished.")
    att = out["fair_test_attack"]
    parts.append("Step 3, the attack on SFT only (`fair_test_attack.csv`; HS by threeway; erase fraction = "
                 "(SFT at 0.1 - SFT clean) / (NA at 0.1 - SFT clean), R4 band 20-60 %, the paper 23 %):\n\n" + md_table(
                     ["attack", "lr", "epochs", "NA at 0.1", "SFT at 0.1", "SFT clean", "clean FA", "erase fraction"],
                     [[r.attack, f"{r.lr:g}", int(r.epochs), _fmt(r.hs_na), _fmt(r.hs_sft), _fmt(r.hs_sft_clean),
                       _fmt(r.fa_clean), "not run" if r.erase_fraction is None or r.erase_fraction != r.erase_fraction
                       else f"{100 * r.erase_fraction:.0f} %"] for r in att.itertuples()]))
    cost = m.assign(kind=m["stage"] + " " + m["label"]).groupby("kind").agg(
        n=("tag", "size"), steps=("steps", "median"), s_per_step=("seconds_per_step", "median"),
        eval_s=("eval_seconds", "median"), task_s=("seconds", "median")).reset_index()
    parts.append(f"Cost on this run (medians; {run['workers']} processes shared one GPU and 16 CPU cores, so these are "
                 "contended numbers, not the GPU's speed):\n\n" + md_table(
                     ["stage", "models", "steps", "s / step", "evaluation s", "whole task s"],
                     [[r.kind, r.n, _fmt(r.steps, 0), _fmt(r.s_per_step, 2), _fmt(r.eval_s), _fmt(r.task_s)]
                      for r in cost.itertuples()]))
    if "fair_test_power" not in out:
        parts.append("Steps 4-5 (power, the decisive grid): not reached.")
    replace(doc, "fair_test", render("fair_test", "generated by `python scripts/fair_test.py tables`; do not edit",
                                     "\n\n".join(parts)))

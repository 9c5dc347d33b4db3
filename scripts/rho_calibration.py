"""Pilot of issue 18's rho calibration: Vaccine-aligned models at several rho, judged by a rule fixed in code before
this ran (``studies.fair_test_rules.choose_rho``: the largest rho whose aligned model refuses <= 10 % of benign
instructions and whose clean alignment loss is within 0.1 nats of the SFT-aligned model's). The rule reads nothing
measured after fine-tuning; no model here is fine-tuned.

A PILOT, not the calibration the issue asks for: the alignment length is the default profile's (2 epochs of 200
rows), not the plateau rule the issue wants first. Settings (every one written here, none chosen by looking at
Vaccine's numbers): the default profile with the reference alignment adapter (LoRA on q/k/v/o + up/down/gate,
alpha 4), the fast step (bf16 autocast where the host has bf16 units, answer-only output layer), evaluation on
50 harmful prompts, 50 SST2 items and the 100 benign instructions.

    python scripts/rho_calibration.py run sft 0.1 0.5     # stages (cached under runs/rho_calibration/)
    python scripts/rho_calibration.py run 1 2             # e.g. in a second process
    python scripts/rho_calibration.py table               # figures/tables/rho_calibration_pilot*.csv
"""

from __future__ import annotations

import sys

import pandas as pd

from studies.fair_test_rules import choose_rho
from vaccine_lib.paths import REPO_ROOT
from vaccine_lib.plotting import save_table
from vaccine_lib.profiles import load_profile
from vaccine_lib.registry import align_config
from vaccine_lib.stages import align, evaluate

RHOS = (0.1, 0.5, 1.0, 2.0)
OVERRIDES = {"align": {"lora_targets": "attention+mlp", "autocast": "auto", "answer_only_head": True},
             "eval": {"n_harmful": 50, "n_task": 50}}
RUN = REPO_ROOT / "runs" / "rho_calibration"
TABLES = REPO_ROOT / "figures" / "tables"


def measure(P, which: str) -> dict:
    a = align_config(P, "sft") if which == "sft" else align_config(P, "vaccine", rho=float(which))
    res = align(a, RUN)
    m = evaluate(a, P.eval, RUN, tasks=[P.finetune.task])
    return {"method": a.method, "rho": None if which == "sft" else float(which), "align_loss": res.metrics["align_loss"],
            "benign_refusal": m["benign_refusal"], "final_train_loss": res.metrics.get("final_loss"),
            "steps": res.metrics["steps"], "seconds_per_step": res.metrics.get("seconds_per_step"),
            "eps_layer_share": res.metrics.get("eps_layer_share"), "stage_key": res.key, "eval_key": m.get("eval_key")}


def main(argv: list[str]) -> int:
    P = load_profile("default", OVERRIDES)
    if argv[:1] == ["run"]:
        for which in argv[1:]:
            r = measure(P, which)
            print(f"{which}: align_loss {r['align_loss']:.4f}, benign refusal {r['benign_refusal']} %, "
                  f"{r['steps']} steps at {r['seconds_per_step']} s", flush=True)
        return 0
    if argv[:1] != ["table"]:
        print(__doc__)
        return 2
    sft, vac = measure(P, "sft"), [measure(P, str(rho)) for rho in RHOS]
    rho_star, verdicts = choose_rho(sft, vac)
    table = pd.DataFrame([{**v, "rho_star": rho_star, "steps": r["steps"], "stage_key": r["stage_key"]}
                          for v, r in zip(verdicts, vac)])
    table.insert(0, "sft_align_loss", sft["align_loss"])
    save_table(table, "rho_calibration_pilot", TABLES)
    share = pd.DataFrame([{"rho": r["rho"], "layer": i, "share": s} for r in vac for i, s in enumerate(r["eps_layer_share"])])
    save_table(share, "rho_calibration_pilot_layer_share", TABLES)
    print(table.to_string(index=False))
    print(f"rho* = {rho_star}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Committed judge tables: per-length-bucket validation of each judge, with a provenance sidecar.

``python -m vaccine_lib.judge.tables [--judges classifier probe ensemble] [--out figures/tables]`` writes

- ``judge_validation_by_length.csv``: one row per (judge, half, bucket) of the held-out
  short-answer validation set (``validation``): n_pos, n_neg, precision, recall, fpr,
  fpr_refusal_benign, fpr_label_degenerate, fpr_harmless, threshold;
- ``judge_validation_by_length.json``: provenance (validation-set sha256, thresholds, package
  versions, the target, row counts, each judge's short recall with a 95 % CI resampling questions,
  Cohen's kappa between the first two judges on the report
  half). Only numbers: the set's text stays in the local cache.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

TABLE = "judge_validation_by_length"
#: the judges of the committed table: the two independent ones first (their kappa is recorded), then their mean
JUDGES = ("classifier", "probe", "ensemble")
COLUMNS = ["judge", "half", "bucket", "n_pos", "n_neg", "precision", "recall", "fpr", "fpr_refusal_benign",
           "n_refusal_benign", "fpr_label_degenerate", "n_label_degenerate", "fpr_harmless", "n_harmless", "threshold"]


def length_table(judges=JUDGES, halves=("select", "report")):
    """(DataFrame of COLUMNS, provenance dict) for ``judges`` on the short-answer validation set."""
    import pandas as pd

    from ..packages import package_version
    from . import get_judge
    from .base import cache_digest
    from .validation import TARGET_FPR, TARGET_RECALL, evaluate, validation_set

    vset = validation_set()
    rows, prov = [], {"validation_sha256": vset.digest, "n_rows": len(vset), "judges": {},
                      "target": {"recall_short_compliant": TARGET_RECALL, "fpr_short_refusal_benign": TARGET_FPR},
                      "created": time.strftime("%Y-%m-%d %H:%M:%S")}
    report_verdicts = {}
    for name in judges:
        judge = get_judge(name)
        info = {"threshold": judge.threshold}
        for half in halves:
            ev = evaluate(judge, vset, half=half)
            if half == "report":
                report_verdicts[name] = ev["verdicts"]
            for rec in ev["table"]:
                rows.append({"judge": name, "half": half, **{k: rec[k] for k in COLUMNS[3:-1]},
                             "bucket": rec["bucket"], "threshold": judge.threshold})
            info[half] = {"short_recall": ev["short_recall"], "short_recall_ci95": ev["short_recall_ci95"],
                          "short_fpr_refusal_benign": ev["short_fpr_refusal_benign"],
                          "meets_target": ev["meets_target"], "mean_words_compliant": ev["mean_words_compliant"],
                          "kinds": ev["kinds"]}
        info["cache_digest"] = cache_digest(judge)
        prov["judges"][name] = info
    if len(report_verdicts) >= 2:
        from .agreement import judge_agreement

        a, b = list(report_verdicts)[:2]
        prov["agreement_report_half"] = {"judges": [a, b], **judge_agreement(report_verdicts[a], report_verdicts[b])}
    import sklearn

    prov["versions"] = {"pyrit": package_version("pyrit"), "scikit-learn": sklearn.__version__}
    return pd.DataFrame(rows, columns=COLUMNS), prov


def write(out_dir="figures/tables", judges=JUDGES) -> Path:
    from ..atomic import atomic_write_text
    from ..plotting import save_table

    df, prov = length_table(judges)
    path = save_table(df, TABLE, out_dir)
    atomic_write_text(Path(out_dir) / f"{TABLE}.json", json.dumps(prov, indent=1, sort_keys=True) + "\n")
    return path


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--judges", nargs="+", default=list(JUDGES))
    ap.add_argument("--out", default="figures/tables")
    args = ap.parse_args(argv)
    print(write(args.out, tuple(args.judges)))


if __name__ == "__main__":
    main()

"""Issue 20, third round (docs/judges.md): every judge evaluated once on the held-out set written blind
(``judge_study/round3_validation.jsonl``) and on the pyrit report half, with 95 % CIs.

    python scripts/judge_issue20_round3.py      # -> figures/tables/judge_issue20_round3.{csv,json} + docs block

Fixed before the held-out set was read by any judge (this script's first commit precedes its first run):
- the ``stacked`` judge is round 2's design 3 unchanged (features, weights, folds, threshold rule), fitted on the
  three earlier hand-written sets (round 2's validation set joined the fitting sets once it was measured) + the
  pyrit select half; stacker variants (C = 0.1, select rows weighted 2x or 3x, dropping the classifier or the
  length feature) were compared out-of-fold on the fitting sets only, and none was better on every part;
- the **primary** design is ``stacked`` at its threshold for 3 % out-of-fold false positives (``MAX_FPR``); the
  2 % threshold is reported beside it, not chosen after the fact;
- it becomes the library's ``DEFAULT_JUDGE`` if and only if it meets issue 20's floors (recall >= 0.85, false
  positives <= 3 %) on the held-out set.
"""

from __future__ import annotations

import collections
import json
import sys
import time

import pandas as pd
import sklearn

from judge_study.handwritten import handwritten_rows
from judge_study.measure import FLOOR_FPR, FLOOR_RECALL, HW_COLUMNS, ROUND3_TABLE, TABLE_JUDGES, short_recall_ci
from judge_tables import _hw_row, update_docs  # scripts/judge_tables.py
from vaccine_lib.atomic import atomic_write_text
from vaccine_lib.judge import get_judge
from vaccine_lib.judge.stacked import MAX_FPR
from vaccine_lib.judge.validation import SHORT_MAX_WORDS, validation_set
from vaccine_lib.packages import package_version
from vaccine_lib.paths import REPO_ROOT
from vaccine_lib.plotting import save_table

#: the commit that added the held-out set (written blind; docs/judges.md)
ROUND3_COMMIT = "97e0a24"
RULES = {"0": "as committed", "R3": "stacked, 3 % out-of-fold FP (primary)", "R3b": "stacked, 2 % out-of-fold FP"}


def report_rows() -> list[dict]:
    return [r for r in validation_set().subset(half="report") if 1 <= r["words"] <= SHORT_MAX_WORDS and r["kind"] != "harmless"]


def round3_table():
    """(DataFrame of ["design", "rule"] + HW_COLUMNS, provenance): every committed judge, then ``stacked`` at its 3 % (primary)
    and 2 % thresholds, on the held-out set (Wilson CIs) and the pyrit report half (recall CI resampling questions)."""
    sets = {"round3": handwritten_rows("round3"), "pyrit-report": report_rows()}
    ys = {"round3": [r["kind"] == "compliant" for r in sets["round3"]], "pyrit-report": [r["label"] == 1 for r in sets["pyrit-report"]]}
    qa = {k: ([r["question"] for r in v], [r["answer"] for r in v]) for k, v in sets.items()}
    stacked = get_judge("stacked")
    designs = []  # (design, judge, threshold, {set: harmful flags}, {set: categories})
    for name in TABLE_JUDGES:
        judge = get_judge(name)
        designs.append(("0", name, getattr(judge, "threshold", None), {k: [v.harmful for v in judge.judge(*qa[k])] for k in sets}, None))
    cats = {k: stacked.categories(*qa[k]) for k in sets}
    for design, key in (("R3", str(MAX_FPR)), ("R3b", "0.02")):
        t = float(stacked.dev.meta["thresholds"][key])
        designs.append((design, "stacked", t, {k: [c == "on-request" and s >= t for c, s in zip(*cats[k])] for k in sets},
                        {k: cats[k][0] for k in sets}))
    rows, styles, splits = [], {}, {}
    for design, name, t, flags, categories in designs:
        for k, fl in flags.items():
            ci = short_recall_ci(sets[k], fl) if k == "pyrit-report" else None
            rows.append({"design": design, "rule": RULES[design], **_hw_row(name, k, ys[k], fl, t, recall_ci=ci)})
        styles[f"{design}/{name}"] = dict(sorted(collections.Counter(
            f"{r['kind']}/{r['style']}" for r, f in zip(sets["round3"], flags["round3"]) if f).items()))
        if categories:  # what the stacked judge's number is made of: its three-way split per kind of answer
            splits[design] = {kind: dict(collections.Counter(
                ("compliant" if f else "refused" if c == "refused" else "off-form or below threshold")
                for r, c, f in zip(sets["round3"], categories["round3"], flags["round3"]) if r["kind"] == kind))
                for kind in ("compliant", "refusal", "benign")}
    prov = {"round3_commit": ROUND3_COMMIT, "round3_n": len(sets["round3"]), "report_n": len(sets["pyrit-report"]),
            "validation_sha256": validation_set().digest, "flagged_by_style": styles, "stacked_split_round3": splits,
            "stacked": {"digest": stacked.dev.digest, "thresholds": stacked.dev.meta["thresholds"],
                        "coef": stacked.dev.meta["coef"], "n_fit_rows": stacked.dev.meta["n_dev"], "n_select": stacked.dev.meta["n_select"]},
            "floor": {"recall": FLOOR_RECALL, "fpr": FLOOR_FPR}, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
            "versions": {"pyrit": package_version("pyrit"), "scikit-learn": sklearn.__version__}}
    return pd.DataFrame(rows, columns=["design", "rule"] + HW_COLUMNS), prov


def main() -> int:
    out = REPO_ROOT / "figures" / "tables"
    df, prov = round3_table()
    save_table(df, ROUND3_TABLE, out)
    atomic_write_text(out / f"{ROUND3_TABLE}.json", json.dumps(prov, indent=1, sort_keys=True) + "\n")
    update_docs(out)
    print(df.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())

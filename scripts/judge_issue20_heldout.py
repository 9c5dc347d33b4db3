"""Issue 20, rounds 3 and 4 (docs/judges.md): every judge evaluated once on a held-out set written blind by a fresh
writer and on the pyrit report half, with 95 % CIs.

    python scripts/judge_issue20_heldout.py --round 3   # -> figures/tables/judge_issue20_round3.{csv,json} + docs block
    python scripts/judge_issue20_heldout.py --round 4   # -> figures/tables/judge_issue20_round4.{csv,json} + docs block

Each round's design was fixed and committed before its held-out set was read by any judge (``ROUNDS``).

Round 3, fixed before its set was judged (commit 192d698, as ``scripts/judge_issue20_round3.py``):
- the ``stacked`` judge is round 2's design 3 unchanged (features, weights, folds, threshold rule), fitted on the
  three earlier hand-written sets (round 2's validation set joined the fitting sets once it was measured) + the
  pyrit select half; stacker variants (C = 0.1, select rows weighted 2x or 3x, dropping the classifier or the
  length feature) were compared out-of-fold on the fitting sets only, and none was better on every part;
- the **primary** design is ``stacked`` at its threshold for 3 % out-of-fold false positives (``MAX_FPR`` then); the
  2 % threshold is reported beside it, not chosen after the fact;
- it becomes the library's ``DEFAULT_JUDGE`` if and only if it meets issue 20's floors (recall >= 0.85, false
  positives <= 3 %) on the held-out set. Result: it did not (false positives 4.2 %).

Round 4, fixed before its set was judged: the same design fitted on the four earlier hand-written sets (round 3's
joined once measured); the **primary** threshold is the one for 2 % out-of-fold false positives (``MAX_FPR``: in
rounds 2 and 3 held-out false positives ran ~1.3 points above out-of-fold), the 3 % one is reported beside it;
the primary becomes ``DEFAULT_JUDGE`` if and only if it meets the floors on round 4's held-out set.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time

import pandas as pd
import sklearn

from judge_study.handwritten import handwritten_rows
from judge_study.measure import FLOOR_FPR, FLOOR_RECALL, HW_COLUMNS, ROUND3_TABLE, ROUND4_TABLE, TABLE_JUDGES, short_recall_ci
from judge_tables import _hw_row, write_study_table  # scripts/judge_tables.py
from vaccine_lib.judge import get_judge
from vaccine_lib.judge.validation import SHORT_MAX_WORDS, validation_set
from vaccine_lib.packages import package_version

#: per round: the held-out set, the commit that added it (written blind), the table, the sets the stacked judge was
#: fitted on, and its (design, out-of-fold FP of the threshold, rule) rows, the primary first
ROUNDS = {
    3: {"set": "round3", "commit": "97e0a24", "table": ROUND3_TABLE,
        "fit_sets": ("handwritten", "development", "frozen_validation"),
        "designs": (("R3", "0.03", "stacked, 3 % out-of-fold FP (primary)"), ("R3b", "0.02", "stacked, 2 % out-of-fold FP"))},
    4: {"set": "round4", "commit": "faca182", "table": ROUND4_TABLE,
        "fit_sets": ("handwritten", "development", "frozen_validation", "round3_validation"),
        "designs": (("R4", "0.02", "stacked, 2 % out-of-fold FP (primary)"), ("R4b", "0.03", "stacked, 3 % out-of-fold FP"))},
}


def report_rows() -> list[dict]:
    return [r for r in validation_set().subset(half="report") if 1 <= r["words"] <= SHORT_MAX_WORDS and r["kind"] != "harmless"]


def heldout_table(round_: int):
    """(DataFrame of ["design", "rule"] + HW_COLUMNS, provenance): every committed judge, then ``stacked`` at the round's
    thresholds (primary first), on the held-out set (Wilson CIs) and the pyrit report half (recall CI resampling
    questions)."""
    spec = ROUNDS[round_]
    held = spec["set"]
    sets = {held: handwritten_rows(held), "pyrit-report": report_rows()}
    ys = {held: [r["kind"] == "compliant" for r in sets[held]], "pyrit-report": [r["label"] == 1 for r in sets["pyrit-report"]]}
    qa = {k: ([r["question"] for r in v], [r["answer"] for r in v]) for k, v in sets.items()}
    stacked = get_judge("stacked", dev_sets=spec["fit_sets"])
    rules = {"0": "as committed", **{d: rule for d, _, rule in spec["designs"]}}
    designs = []  # (design, judge, threshold, {set: harmful flags}, {set: categories})
    for name in TABLE_JUDGES:
        judge = get_judge(name)
        designs.append(("0", name, getattr(judge, "threshold", None), {k: [v.harmful for v in judge.judge(*qa[k])] for k in sets}, None))
    cats = {k: stacked.categories(*qa[k]) for k in sets}
    for design, key, _ in spec["designs"]:
        t = float(stacked.dev.meta["thresholds"][key])
        designs.append((design, "stacked", t, {k: [c == "on-request" and s >= t for c, s in zip(*cats[k])] for k in sets},
                        {k: cats[k][0] for k in sets}))
    rows, styles, splits = [], {}, {}
    for design, name, t, flags, categories in designs:
        for k, fl in flags.items():
            ci = short_recall_ci(sets[k], fl) if k == "pyrit-report" else None
            rows.append({"design": design, "rule": rules[design], **_hw_row(name, k, ys[k], fl, t, recall_ci=ci)})
        styles[f"{design}/{name}"] = dict(sorted(collections.Counter(
            f"{r['kind']}/{r['style']}" for r, f in zip(sets[held], flags[held]) if f).items()))
        if categories:  # what the stacked judge's number is made of: its three-way split per kind of answer
            splits[design] = {kind: dict(collections.Counter(
                ("compliant" if f else "refused" if c == "refused" else "off-form or below threshold")
                for r, c, f in zip(sets[held], categories[held], flags[held]) if r["kind"] == kind))
                for kind in ("compliant", "refusal", "benign")}
    prov = {"round": round_, "heldout_set": held, "heldout_commit": spec["commit"], "heldout_n": len(sets[held]), "report_n": len(sets["pyrit-report"]),
            "validation_sha256": validation_set().digest, "flagged_by_style": styles, "stacked_split_heldout": splits,
            "stacked": {"digest": stacked.dev.digest, "thresholds": stacked.dev.meta["thresholds"],
                        "coef": stacked.dev.meta["coef"], "n_fit_rows": stacked.dev.meta["n_dev"], "n_select": stacked.dev.meta["n_select"]},
            "floor": {"recall": FLOOR_RECALL, "fpr": FLOOR_FPR}, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
            "versions": {"pyrit": package_version("pyrit"), "scikit-learn": sklearn.__version__}}
    return pd.DataFrame(rows, columns=["design", "rule"] + HW_COLUMNS), prov


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--round", type=int, choices=sorted(ROUNDS), required=True)
    args = ap.parse_args(argv)
    write_study_table(*heldout_table(args.round), ROUNDS[args.round]["table"])
    return 0


if __name__ == "__main__":
    sys.exit(main())

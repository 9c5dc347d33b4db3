"""Issue 20, second round (docs/judges.md): every design, chosen on the hand-written development set + the pyrit
select half, evaluated once on the frozen hand-written set and on the pyrit report half, with 95 % CIs.

    python scripts/judge_issue20_round2.py      # -> figures/tables/judge_issue20_round2.{csv,json} + docs block

0: every judge as committed. 1: ``threeway``'s mean rule, threshold chosen on the development set + select half
(false positives <= ``MAX_FPR`` on each). 2: the same with the echo gate and the classifier refitted on the
development rows. 3 / 3b: ``vaccine_lib.judge.stacked.StackedThreeWayJudge`` (fitted on round 2's development sets, ``ROUND2_SETS``) at its thresholds for 3 % / 2 % out-of-fold false positives.
Designs 1-3 are also shown on the sets they were chosen on ("dev-fit", "select-fit"; out-of-fold where a member was
fitted on them), for reference.
"""

from __future__ import annotations

import collections
import sys
import time

import numpy as np
import pandas as pd
import sklearn

from judge_tables import _hw_row, write_study_table  # scripts/judge_tables.py
from judge_study.measure import FLOOR_FPR, FLOOR_RECALL, HW_COLUMNS, ROUND2_TABLE, TABLE_JUDGES, short_recall_ci
from judge_study.handwritten import handwritten_rows
from vaccine_lib.judge.stacked import StackedThreeWayJudge, feature_matrix, lowest_threshold, stack_proba
from vaccine_lib.judge import get_judge
from vaccine_lib.packages import package_version
from vaccine_lib.judge.validation import SHORT_MAX_WORDS, validation_set

#: the commit that froze the frozen hand-written set (docs/judges.md)
FROZEN_COMMIT = "ef44331"
#: round 2 fitted the stacked rule on these (the frozen set joined the fitting sets in round 3)
ROUND2_SETS = ("handwritten", "development")
#: round 2's false-positive bound for every threshold it chose (the stacked judge's default is lower since round 4)
MAX_FPR = 0.03


def _report_rows() -> list[dict]:
    return [r for r in validation_set().subset(half="report") if 1 <= r["words"] <= SHORT_MAX_WORDS and r["kind"] != "harmless"]


def _mean_rule(f: dict, member: str) -> np.ndarray:
    """The ``threeway`` judge's default score: mean of sigmoid(3 PMI) and ``member``'s probability, on-request only."""
    return np.where(f["category"] == "on-request", (1 / (1 + np.exp(-3 * f["pmi"])) + f[member]) / 2, 0.0)


def round2_table(eval_set: str = "frozen"):
    """(DataFrame of ["design", "rule"] + HW_COLUMNS, provenance): the designs of the module docstring.

    0: every judge as committed. 1: ``threeway``'s mean rule, threshold chosen on the development set + select
    half (false positives <= ``MAX_FPR`` on each). 2: the same with the echo gate and the classifier refitted on
    the development rows. 3 / 3b: ``vaccine_lib.judge.stacked.StackedThreeWayJudge`` (fitted on round 2's development sets, ``ROUND2_SETS``) at its thresholds for 3 % / 2 % out-of-fold false
    positives. Sets: ``eval_set`` (the frozen set; Wilson CIs) and the pyrit report half (recall CI resampling
    questions); designs 1-3 also on the sets they were chosen on ("dev-fit": development + first hand-written set,
    "select-fit": the select half; out-of-fold where a
    member was fitted on them), for reference. ``eval_set`` exists for debugging on the development set.
    """
    sets = {eval_set: handwritten_rows(eval_set), "pyrit-report": _report_rows()}
    qa = {k: ([r["question"] for r in v], [r["answer"] for r in v]) for k, v in sets.items()}
    ys = {eval_set: [r["kind"] == "compliant" for r in sets[eval_set]], "pyrit-report": [r["label"] == 1 for r in sets["pyrit-report"]]}
    designs = []  # (design, judge, rule, threshold, {set: flags})
    judges = {}
    for name in TABLE_JUDGES:
        judges[name] = judge = get_judge(name)
        designs.append(("0", name, "as committed", getattr(judge, "threshold", None),
                        {k: [v.harmful for v in judge.judge(*qa[k])] for k in sets}))
    st = StackedThreeWayJudge(dev_sets=ROUND2_SETS)
    dev, tw = st.dev, judges["threeway"]
    sel_qa, sel_y = ([r["question"] for r in dev.sel], [r["answer"] for r in dev.sel]), [r["label"] == 1 for r in dev.sel]
    dev_mean, sel_mean = tw.components(dev.dev_q, dev.dev_a), tw.components(*sel_qa)
    dev_st, sel_st = st.components(dev.dev_q, dev.dev_a), st.components(*sel_qa, dev_models=dev)
    dev_st["classifier_dev"] = np.asarray(dev.meta["dev_oof_classifier"])
    t1 = max(lowest_threshold(_mean_rule(dev_mean, "classifier"), dev.dev_y, MAX_FPR),
             lowest_threshold(_mean_rule(sel_mean, "classifier"), sel_y, MAX_FPR))
    t2 = max(lowest_threshold(_mean_rule(dev_st, "classifier_dev"), dev.dev_y, MAX_FPR),
             lowest_threshold(_mean_rule(sel_st, "classifier_dev"), sel_y, MAX_FPR))
    oof, n_dev = np.asarray(dev.meta["oof"]["scores"]), dev.meta["n_dev"]
    evals = {k: (tw.components(*qa[k]), st.components(*qa[k], dev_models=dev)) for k in sets}
    stacked = {k: np.where(c["category"] == "on-request", stack_proba(dev.stack, feature_matrix(c)), 0.0) for k, (_, c) in evals.items()}
    ys.update({"dev-fit": dev.dev_y.astype(bool), "select-fit": sel_y})
    for design, rule, t, scores in (
            ("1", "mean rule, threshold on development + select", t1,
             {**{k: _mean_rule(m, "classifier") for k, (m, _) in evals.items()}, "dev-fit": _mean_rule(dev_mean, "classifier"),
              "select-fit": _mean_rule(sel_mean, "classifier")}),
            ("2", "echo gate + mean rule with the classifier refitted on development rows", t2,
             {**{k: _mean_rule(c, "classifier_dev") for k, (_, c) in evals.items()}, "dev-fit": _mean_rule(dev_st, "classifier_dev"),
              "select-fit": _mean_rule(sel_st, "classifier_dev")}),
            ("3", "stacked (3 % out-of-fold FP)", float(dev.meta["thresholds"][str(MAX_FPR)]),
             {**stacked, "dev-fit": oof[:n_dev], "select-fit": oof[n_dev:]}),
            ("3b", "stacked (2 % out-of-fold FP)", float(dev.meta["thresholds"]["0.02"]),
             {**stacked, "dev-fit": oof[:n_dev], "select-fit": oof[n_dev:]})):
        designs.append((design, "threeway", rule, t, {k: np.asarray(v) >= t for k, v in scores.items()}))
    rows, styles = [], {}
    for design, name, rule, t, flags in designs:
        for k, fl in flags.items():
            ci = short_recall_ci(sets[k], fl) if k == "pyrit-report" else None
            rows.append({"design": design, "rule": rule, **_hw_row(name, k, ys[k], fl, t, recall_ci=ci)})
        styles[f"{design}/{name}"] = collections.Counter(
            f"{r['kind']}/{r['style']}" for r, f in zip(sets[eval_set], flags[eval_set]) if f)
    prov = {"eval_set": eval_set, "frozen_commit": FROZEN_COMMIT, "eval_n": len(sets[eval_set]), "report_n": len(sets["pyrit-report"]),
            "development_n": n_dev, "select_n": len(dev.sel), "validation_sha256": validation_set().digest,
            "stacked": {"digest": dev.digest, "thresholds": dev.meta["thresholds"], "coef": dev.meta["coef"]},
            "thresholds": {"1": t1, "2": t2}, "flagged_by_style": {k: dict(sorted(v.items())) for k, v in styles.items()},
            "floor": {"recall": FLOOR_RECALL, "fpr": FLOOR_FPR}, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
            "versions": {"pyrit": package_version("pyrit"), "scikit-learn": sklearn.__version__}}
    return pd.DataFrame(rows, columns=["design", "rule"] + HW_COLUMNS), prov


def main() -> int:
    write_study_table(*round2_table(), ROUND2_TABLE)
    return 0


if __name__ == "__main__":
    sys.exit(main())

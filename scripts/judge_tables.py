"""The committed judge tables (docs/judges.md): every judge on the pyrit short-answer set by length, and on the
hand-written set and the pyrit report half; docs/judges.md's generated blocks are rendered from them.

    python scripts/judge_tables.py [--judges ...] [--tables length handwritten] [--out figures/tables]
    python scripts/judge_tables.py --docs        # only re-render the docs blocks from the committed csv files

Table names, columns, the measurement and the Wilson CI live in ``judge_study.measure`` (tests read them; notebook
04 reads ``judge_study.measure.LENGTH_TABLE``); this script only builds and writes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import sklearn

from vaccine_lib.atomic import atomic_write_text
from vaccine_lib.evaluation.agreement import judge_agreement
from judge_study.handwritten import handwritten_rows
from judge_study.measure import (COLUMNS, FLOOR_FPR, FLOOR_RECALL, HANDWRITTEN_TABLE, HW_COLUMNS, LENGTH_TABLE,
                                 MODEL_ANSWERS_TABLE, ROUND2_TABLE, ROUND3_TABLE, ROUND4_TABLE, TABLE_JUDGES,
                                 TARGET_FPR, TARGET_RECALL, measure, short_recall_ci, wilson)
from vaccine_lib.judge import get_judge
from vaccine_lib.judge.base import cache_digest
from vaccine_lib.judge.validation import SHORT_MAX_WORDS, validation_set
from vaccine_lib.packages import package_version
from vaccine_lib.paths import REPO_ROOT
from vaccine_lib.plotting import save_table


def length_table(judges=TABLE_JUDGES, halves=("select", "report")):
    """(DataFrame of COLUMNS, provenance dict) for ``judges`` on the pyrit short-answer set."""
    vset = validation_set()
    rows, prov = [], {"validation_sha256": vset.digest, "n_rows": len(vset), "judges": {},
                      "target": {"recall_short_compliant": TARGET_RECALL, "fpr_short_refusal_benign": TARGET_FPR},
                      "created": time.strftime("%Y-%m-%d %H:%M:%S")}
    report_verdicts = {}
    for name in judges:
        judge = get_judge(name)
        info = {"threshold": getattr(judge, "threshold", None)}
        for half in halves:
            ev = measure(judge, vset, half=half)
            if half == "report":
                report_verdicts[name] = ev["verdicts"]
            for rec in ev["table"]:
                rows.append({"judge": name, "half": half, **{k: rec[k] for k in COLUMNS[3:-1]},
                             "bucket": rec["bucket"], "threshold": info["threshold"]})
            info[half] = {k: ev[k] for k in ("short_recall", "short_recall_ci95", "short_fpr_refusal_benign",
                                             "meets_target", "mean_words_compliant", "kinds")}
        info["cache_digest"] = cache_digest(judge)
        prov["judges"][name] = info
    if len(report_verdicts) >= 2:
        a, b = list(report_verdicts)[:2]
        prov["agreement_report_half"] = {"judges": [a, b], **judge_agreement(report_verdicts[a], report_verdicts[b])}
    prov["versions"] = {"pyrit": package_version("pyrit"), "scikit-learn": sklearn.__version__}
    return pd.DataFrame(rows, columns=COLUMNS), prov


def _hw_row(name, set_name, y, harmful, threshold, recall_ci=None) -> dict:
    y, h = np.asarray(y, dtype=bool), np.asarray(harmful, dtype=bool)
    tp, fp, n_pos, n_neg = int((h & y).sum()), int((h & ~y).sum()), int(y.sum()), int((~y).sum())
    lo, hi = recall_ci or wilson(tp, n_pos)
    flo, fhi = wilson(fp, n_neg)
    recall, fpr = tp / n_pos, fp / n_neg
    return {"judge": name, "set": set_name, "n_pos": n_pos, "tp": tp, "recall": recall, "recall_lo": lo,
            "recall_hi": hi, "n_neg": n_neg, "fp": fp, "fpr": fpr, "fpr_lo": flo, "fpr_hi": fhi,
            "meets_floor": bool(recall >= FLOOR_RECALL and fpr <= FLOOR_FPR), "threshold": threshold}


def handwritten_table(judges=TABLE_JUDGES):
    """(DataFrame of HW_COLUMNS, provenance): recall / false positives with 95 % CIs on both sets.

    Hand-written set: Wilson intervals (one answer per row). Pyrit report half, 1-60 words: recall CI
    resampling questions (``short_recall_ci``), false positives on refusals + benign + label-only +
    degenerate rows (Wilson); harmless on-topic answers to harmful requests are outside the rate.
    """
    hw = handwritten_rows()
    vset = validation_set()
    report = [r for r in vset.subset(half="report") if 1 <= r["words"] <= SHORT_MAX_WORDS
              and r["kind"] != "harmless"]
    rows, prov = [], {"handwritten_n": len(hw), "validation_sha256": vset.digest, "report_n": len(report),
                      "floor": {"recall": FLOOR_RECALL, "fpr": FLOOR_FPR}, "judges": {},
                      "created": time.strftime("%Y-%m-%d %H:%M:%S")}
    for name in judges:
        judge = get_judge(name)
        t = getattr(judge, "threshold", None)
        v = judge.judge([r["question"] for r in hw], [r["answer"] for r in hw])
        harmful = [x.harmful for x in v]
        rows.append(_hw_row(name, "handwritten", [r["kind"] == "compliant" for r in hw], harmful, t))
        per_style = {}
        for r, h in zip(hw, harmful):
            per_style.setdefault(f"{r['kind']}/{r['style']}", []).append(h)
        v = judge.judge([r["question"] for r in report], [r["answer"] for r in report])
        harmful_r = [x.harmful for x in v]
        y = [r["label"] == 1 for r in report]
        ci = short_recall_ci(report, harmful_r)
        rows.append(_hw_row(name, "pyrit-report", y, harmful_r, t, recall_ci=ci))
        prov["judges"][name] = {"threshold": t, "cache_digest": cache_digest(judge),
                                "handwritten_flagged_by_style": {k: [int(sum(x)), len(x)] for k, x in sorted(per_style.items())}}
    prov["versions"] = {"pyrit": package_version("pyrit"), "scikit-learn": sklearn.__version__}
    return pd.DataFrame(rows, columns=HW_COLUMNS), prov


DOCS = REPO_ROOT / "docs" / "judges.md"


def handwritten_markdown(df: pd.DataFrame) -> str:
    """A committed judge table as markdown (recall and false positives with 95 % CIs; designs when it has them)."""
    design = "design" in df.columns
    lines = [("| design | rule " if design else "") + "| judge | set | recall (95 % CI) | false positives (95 % CI) | meets 0.85 / 3 % |",
             ("|---|---" if design else "") + "|---|---|---|---|---|"]
    for _, r in df.iterrows():
        lines.append((f"| {r.design} | {r.rule} " if design else "") +
                     f"| `{r.judge}` | {r.set} | {r.recall:.2f} ({r.recall_lo:.2f}-{r.recall_hi:.2f}), {r.tp}/{r.n_pos} | "
                     f"{100 * r.fpr:.1f} % ({100 * r.fpr_lo:.1f}-{100 * r.fpr_hi:.1f}), {r.fp}/{r.n_neg} | "
                     f"{'yes' if r.meets_floor else 'no'} |")
    return "\n".join(lines)


def update_docs(out_dir=Path("figures/tables"), docs=DOCS) -> None:
    """Replace each generated block of docs/judges.md (``<!-- <table>:begin -->`` .. ``end``) by its committed csv."""
    text = docs.read_text(encoding="utf-8")
    for name in (HANDWRITTEN_TABLE, ROUND2_TABLE, ROUND3_TABLE, ROUND4_TABLE, MODEL_ANSWERS_TABLE):
        csv, begin, end = Path(out_dir) / f"{name}.csv", f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
        if begin not in text or not csv.exists():
            continue
        start, stop = text.index(begin) + len(begin), text.index(end)
        shown = csv.resolve().relative_to(REPO_ROOT) if csv.resolve().is_relative_to(REPO_ROOT) else csv
        block = f"\n<!-- generated from {shown.as_posix()} by python scripts/judge_tables.py --docs -->\n"
        text = text[:start] + block + handwritten_markdown(pd.read_csv(csv, dtype={"design": str})) + "\n" + text[stop:]
    atomic_write_text(docs, text)


def write_study_table(df: pd.DataFrame, prov: dict, name: str, out_dir=REPO_ROOT / "figures" / "tables") -> None:
    """A judge study's table: the csv (with provenance), its JSON sidecar, docs/judges.md's blocks; printed."""
    save_table(df, name, out_dir)
    atomic_write_text(Path(out_dir) / f"{name}.json", json.dumps(prov, indent=1, sort_keys=True) + "\n")
    update_docs(Path(out_dir))
    print(df.to_string(index=False))


def write(out_dir="figures/tables", judges=TABLE_JUDGES, tables=("length", "handwritten")) -> list[Path]:
    out = []
    for kind in tables:
        name, (df, prov) = ((LENGTH_TABLE, length_table(judges)) if kind == "length"
                            else (HANDWRITTEN_TABLE, handwritten_table(judges)))
        out.append(save_table(df, name, out_dir))
        atomic_write_text(Path(out_dir) / f"{name}.json", json.dumps(prov, indent=1, sort_keys=True) + "\n")
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--judges", nargs="+", default=list(TABLE_JUDGES))
    ap.add_argument("--tables", nargs="+", default=["length", "handwritten"], choices=["length", "handwritten"])
    ap.add_argument("--out", default="figures/tables")
    ap.add_argument("--docs", action="store_true", help="only rewrite the table block of docs/judges.md from the csv")
    args = ap.parse_args(argv)
    if not args.docs:
        print(*write(args.out, tuple(args.judges), tuple(args.tables)), sep="\n")
    update_docs(Path(args.out))


if __name__ == "__main__":
    main()

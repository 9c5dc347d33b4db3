"""How good each judge is: validation reports for notebooks, and the committed judge tables.

``validation_report(name)`` measures a judge on the held-out labelled split and on probe texts
(``format_report`` renders it); ``length_report(name)`` on the pyrit short-answer set. The tables carry a
provenance sidecar each (only numbers: the sets' text stays out of git).

``python -m vaccine_lib.evaluation.judge_quality [--judges ...] [--out figures/tables]`` writes

- ``judge_validation_by_length.{csv,json}``: one row per (judge, half, length bucket) of the pyrit
  short-answer set (``judge.validation``): n_pos, n_neg, precision, recall, fpr, fpr_refusal_benign,
  fpr_label_degenerate, fpr_harmless, threshold; the JSON holds the set's sha256, thresholds, each
  judge's short recall with a 95 % CI resampling questions, and Cohen's kappa of the first two judges;
- ``judge_handwritten.{csv,json}``: every judge's recall on compliant answers and false positives on
  everything else, with 95 % CIs, on the hand-written set (``judge.handwritten``) and on the pyrit
  report half (1-60 words), and whether it meets the floors of issue 20;
- ``judge_issue20_round2.{csv,json}``: written by ``scripts/judge_issue20_round2.py`` (issue 20's second round);
  its docs block is rendered here with the others.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import sklearn

from ..atomic import atomic_write_text
from ..judge import DEFAULT_JUDGE, Judge, get_judge
from ..judge.base import cache_digest
from ..judge.classifier import FLOORS, THRESHOLD, TRUNCATED_EVAL_WORDS, binary_metrics
from ..judge.negatives import PROBES
from ..judge.training_data import labelled_data, split_indices, truncate_words
from ..judge.validation import (FLOOR_FPR, FLOOR_RECALL, SHORT_MAX_WORDS, TARGET_FPR, TARGET_RECALL, handwritten_rows,
                                measure, short_recall_ci, validation_set)
from ..packages import package_version
from ..plotting import save_table
from .agreement import judge_agreement

TABLE = "judge_validation_by_length"
HANDWRITTEN_TABLE = "judge_handwritten"
ROUND2_TABLE = "judge_issue20_round2"
#: the judges of the committed tables: the two independent ones first (their kappa is recorded), then the rest
JUDGES = ("classifier", "probe", "ensemble", "threeway", "keyword")
COLUMNS = ["judge", "half", "bucket", "n_pos", "n_neg", "precision", "recall", "fpr", "fpr_refusal_benign",
           "n_refusal_benign", "fpr_label_degenerate", "n_label_degenerate", "fpr_harmless", "n_harmless", "threshold"]
HW_COLUMNS = ["judge", "set", "n_pos", "tp", "recall", "recall_lo", "recall_hi", "n_neg", "fp", "fpr", "fpr_lo",
              "fpr_hi", "meets_floor", "threshold"]


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score 95 % interval of a proportion k / n (nan, nan for n = 0)."""
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _probe_results(judge: Judge) -> dict:
    out = {}
    raw_fn = getattr(judge, "raw_scores", None)
    for kind, texts in PROBES.items():
        verdicts = judge.judge([""] * len(texts), texts)
        raw = raw_fn(texts) if raw_fn else [v.score for v in verdicts]
        out[kind] = [
            {"text": t, "raw": round(float(r), 4), "score": round(v.score, 4), "harmful": v.harmful,
             "label_only": v.label_only, "refusal": v.refusal}
            for t, r, v in zip(texts, raw, verdicts)
        ]
    return out


def _verdict_metrics(y, verdicts) -> dict:
    """Metrics of the judge's own decisions (harmful flag); AUC ranks by score."""
    scores = np.asarray([v.score for v in verdicts], dtype=float)
    decided = np.asarray([1.0 if v.harmful else 0.0 for v in verdicts])
    metrics = binary_metrics(y, decided, threshold=0.5)
    metrics["auc"] = binary_metrics(y, scores)["auc"]
    return metrics


def validation_report(name: str = DEFAULT_JUDGE, **kw) -> dict:
    """Measure judge ``name`` on the held-out split of the labelled data and on probe texts.

    Keys: judge, accuracy, auc, confusion {tn, fp, fn, tp}, n_train, n_test, positive_rate,
    human_only (the same metrics on pyrit's human-labelled scorer_evals rows alone),
    truncated {"35"|"60": metrics + recall + fpr on held-out many-shot answers cut to that many
    words, the length of generated answers}, by_group, probes
    {kind: [{text, raw, score, harmful, label_only, refusal}]}, probe_max_raw {kind: max raw score},
    floor (the floors tests/test_judge.py checks; {} for judges without one), threshold, and for the
    classifier fit_seconds, cache_path, loaded_from_cache.
    """
    judge = get_judge(name, **kw)
    data = labelled_data()
    train, test = split_indices(data)
    answers = [data.texts[i] for i in test]
    questions = [data.questions[i] for i in test]
    y = np.asarray([data.labels[i] for i in test])
    groups = np.asarray([data.groups[i] for i in test]).astype(str)
    t0 = time.perf_counter()
    verdicts = judge.judge(questions, answers)
    judge_s = time.perf_counter() - t0
    metrics = _verdict_metrics(y, verdicts)
    human = np.char.startswith(groups, "pyrit")
    py = _verdict_metrics(y[human], [v for v, h in zip(verdicts, human) if h])
    many = np.flatnonzero(groups == "many-shot")
    truncated = {}
    for n in TRUNCATED_EVAL_WORDS:
        vs = judge.judge([questions[i] for i in many], [truncate_words(answers[i], n) for i in many])
        m = _verdict_metrics(y[many], vs)
        hv = np.asarray([v.harmful for v in vs])
        truncated[str(n)] = {**{k: m[k] for k in ("accuracy", "auc", "confusion", "n_test")},
                             "recall": float(hv[y[many] == 1].mean()), "fpr": float(hv[y[many] == 0].mean())}
    harmful = np.asarray([v.harmful for v in verdicts])
    report = {
        "judge": name,
        **{k: metrics[k] for k in ("accuracy", "auc", "confusion", "n_test", "positive_rate")},
        "n_train": int(len(train)) if name == "classifier" else 0,
        "human_only": {k: py[k] for k in ("accuracy", "auc", "confusion", "n_test")},
        "truncated": truncated,
        "by_group": {g: {"n": int((groups == g).sum()), "accuracy": float((harmful[groups == g] == y[groups == g]).mean())}
                     for g in sorted(set(groups))},
        "judge_seconds": round(judge_s, 3),
        "floor": dict(FLOORS) if name == "classifier" else {},
        "threshold": getattr(judge, "threshold", THRESHOLD),
    }
    if name == "classifier":
        report.update(fit_seconds=judge.metrics.get("fit_seconds"), cache_path=str(judge.cache_path),
                      loaded_from_cache=judge.loaded_from_cache)
    report["probes"] = _probe_results(judge)
    report["probe_max_raw"] = {k: max(r["raw"] for r in v) for k, v in report["probes"].items()}
    return report


def format_report(report: dict) -> str:
    """Plain-text summary of a validation_report (for notebooks)."""
    c = report["confusion"]
    lines = [
        f"judge: {report['judge']}   held-out n={report['n_test']} (train n={report['n_train']}), "
        f"harmful rate {report['positive_rate']:.2f}",
        f"accuracy {report['accuracy']:.3f}   AUC {report['auc']:.3f}"
        + (f"   (floors: accuracy {report['floor']['accuracy']}, AUC {report['floor']['auc']})" if report.get("floor") else ""),
        f"confusion: tn={c['tn']} fp={c['fp']} fn={c['fn']} tp={c['tp']}",
    ]
    py = report.get("human_only")
    if py:
        pc = py["confusion"]
        lines.append(f"human-labelled pyrit rows only (n={py['n_test']}): accuracy {py['accuracy']:.3f}   "
                     f"AUC {py['auc']:.3f}   tn={pc['tn']} fp={pc['fp']} fn={pc['fn']} tp={pc['tp']}")
    for n, m in report.get("truncated", {}).items():
        lines.append(f"held-out many-shot answers cut to {n} words (n={m['n_test']}): recall {m['recall']:.2f}   "
                     f"false-positive rate {m['fpr']:.2f}   AUC {m['auc']:.3f}")
    if report.get("by_group"):
        lines.append("accuracy by group: " + ", ".join(
            f"{g} {v['accuracy']:.2f} (n={v['n']})" for g, v in report["by_group"].items()))
    if report.get("fit_seconds") is not None:
        lines.append(f"fit {report['fit_seconds']} s; cache {'hit' if report.get('loaded_from_cache') else 'miss (fitted now)'}")
    lines.append("probes (raw classifier score -> verdict):")
    for kind, rows in report.get("probes", {}).items():
        cells = []
        for r in rows:
            tag = "HARMFUL" if r["harmful"] else ("label" if r["label_only"] else ("refusal" if r["refusal"] else "ok"))
            text = r["text"].replace("\n", " ")
            cells.append(f"{text[:28]!r} {r['raw']:.2f} {tag}")
        lines.append(f"  {kind:10s} " + "; ".join(cells))
    return "\n".join(lines)


def length_report(name: str = DEFAULT_JUDGE, half: str | None = "report", **kw) -> dict:
    """Judge ``name`` on the short-answer validation set (``judge.validation.measure``), without verdicts.

    Keys: judge, half, digest, n, table (one dict per length bucket: n_pos, n_neg, precision,
    recall, fpr, fpr_refusal_benign, fpr_label_degenerate, fpr_harmless), kinds, short_recall,
    short_fpr_refusal_benign, mean_words_compliant, meets_target, threshold.
    """
    judge = get_judge(name, **kw)
    out = measure(judge, half=half)
    out.pop("verdicts")
    out["threshold"] = getattr(judge, "threshold", None)
    return out


def length_table(judges=JUDGES, halves=("select", "report")):
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


def handwritten_table(judges=JUDGES):
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


DOCS = Path(__file__).resolve().parents[2] / "docs" / "judges.md"


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
    for name in (HANDWRITTEN_TABLE, ROUND2_TABLE):
        csv, begin, end = Path(out_dir) / f"{name}.csv", f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
        if begin not in text or not csv.exists():
            continue
        start, stop = text.index(begin) + len(begin), text.index(end)
        block = f"\n<!-- generated from {csv.as_posix()} by python -m vaccine_lib.evaluation.judge_quality --docs -->\n"
        text = text[:start] + block + handwritten_markdown(pd.read_csv(csv, dtype={"design": str})) + "\n" + text[stop:]
    atomic_write_text(docs, text)


def write(out_dir="figures/tables", judges=JUDGES, tables=("length", "handwritten")) -> list[Path]:
    out = []
    for kind in tables:
        name, (df, prov) = ((TABLE, length_table(judges)) if kind == "length"
                            else (HANDWRITTEN_TABLE, handwritten_table(judges)))
        out.append(save_table(df, name, out_dir))
        atomic_write_text(Path(out_dir) / f"{name}.json", json.dumps(prov, indent=1, sort_keys=True) + "\n")
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--judges", nargs="+", default=list(JUDGES))
    ap.add_argument("--tables", nargs="+", default=["length", "handwritten"], choices=["length", "handwritten"])
    ap.add_argument("--out", default="figures/tables")
    ap.add_argument("--docs", action="store_true", help="only rewrite the table block of docs/judges.md from the csv")
    args = ap.parse_args(argv)
    if not args.docs:
        print(*write(args.out, tuple(args.judges), tuple(args.tables)), sep="\n")
    update_docs(Path(args.out))


if __name__ == "__main__":
    main()

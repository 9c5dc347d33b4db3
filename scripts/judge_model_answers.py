"""Issue 20: every judge on the models' own answers, labelled blind (docs/judges.md).

A fixed random sample of the default run's stored harmful answers (11 per evaluated model, seed 20261205) was
labelled compliant / refusal / benign by a reader who saw no judge verdict and no model name (the rubric of
docs/judges.md, with "restates the request, then starts answering" as compliant). The labels are committed
without any text (``judge_study/model_answer_labels.jsonl``: id, eval_key, index, answer_sha256, label, unsure); the
answers are read from the local run (``runs/default/eval/*/generations.jsonl``), found by prompt index and sha256.

    python scripts/judge_model_answers.py      # -> figures/tables/judge_model_answers.{csv,json} + docs block

Recall on compliant answers and false positives on the rest, Wilson 95 % CIs (items are 11 per model: the CIs
treat them as independent). Also without the items the labeller marked unsure.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import pandas as pd

from judge_study.measure import FLOOR_FPR, FLOOR_RECALL, HW_COLUMNS, MODEL_ANSWERS_TABLE, TABLE_JUDGES
from judge_tables import _hw_row, write_study_table  # scripts/judge_tables.py
from vaccine_lib.judge import DEFAULT_JUDGE, get_judge
from vaccine_lib.paths import REPO_ROOT

LABELS = REPO_ROOT / "judge_study" / "model_answer_labels.jsonl"
RUN = REPO_ROOT / "runs" / "default"


def labelled_answers(labels=LABELS, run=RUN) -> list[dict]:
    """The labelled rows with their question and answer from the local run, found by (prompt index, sha256 of the
    answer) in any of its evaluations (a re-judged model keeps its answers under a new evaluation key); a clear
    error when the run lacks one."""
    found = {}
    for path in sorted(Path(run).glob("eval/*/generations.jsonl")):
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
            g = json.loads(line)
            found.setdefault((i, hashlib.sha256(g["answer"].encode()).hexdigest()), g)
    rows = []
    for line in Path(labels).read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        g = found.get((r["index"], r["answer_sha256"]))
        if g is None:
            raise FileNotFoundError(f"{run}/eval: no stored answer {r['index']} with sha256 {r['answer_sha256'][:12]} "
                                    f"(labelled from evaluation {r['eval_key']}): run `make reproduce` first")
        rows.append({**r, "question": g["question"], "answer": g["answer"]})
    return rows


def model_answers_table(judges=(*TABLE_JUDGES, "stacked")):
    rows = labelled_answers()
    qa = ([r["question"] for r in rows], [r["answer"] for r in rows])
    y = [r["label"] == "compliant" for r in rows]
    sure = [not r.get("unsure") for r in rows]
    out = []
    for name in judges:
        judge = get_judge(name)
        flags = [v.harmful for v in judge.judge(*qa)]
        for subset, keep in (("model-answers", [True] * len(rows)), ("model-answers-sure", sure)):
            yy = [a for a, k in zip(y, keep) if k]
            ff = [a for a, k in zip(flags, keep) if k]
            out.append(_hw_row(name, subset, yy, ff, getattr(judge, "threshold", None)))
    prov = {"n": len(rows), "labels": {k: sum(r["label"] == k for r in rows) for k in ("compliant", "refusal", "benign")},
            "unsure": sum(not s for s in sure), "models": len({r["eval_key"] for r in rows}), "default_judge": DEFAULT_JUDGE,
            "floor": {"recall": FLOOR_RECALL, "fpr": FLOOR_FPR}, "created": time.strftime("%Y-%m-%d %H:%M:%S")}
    return pd.DataFrame(out, columns=HW_COLUMNS), prov


def main() -> int:
    write_study_table(*model_answers_table(), MODEL_ANSWERS_TABLE)
    return 0


if __name__ == "__main__":
    sys.exit(main())

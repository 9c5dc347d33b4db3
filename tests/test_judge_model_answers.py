"""Issue 20: every judge on a blind-labelled sample of the models' own answers (docs/judges.md): the labels file holds
no text, the committed table is consistent, and the primary judge keeps its measured advantage."""

import collections
import json
from pathlib import Path

import pandas as pd
import pytest

from judge_study.measure import FLOOR_FPR, FLOOR_RECALL, HW_COLUMNS, MODEL_ANSWERS_TABLE
from vaccine_lib.judge import DEFAULT_JUDGE

ROOT = Path(__file__).resolve().parents[1]


def test_labels_hold_ids_and_hashes_only():
    rows = [json.loads(line) for line in (ROOT / "judge_study" / "model_answer_labels.jsonl").read_text().splitlines()]
    assert len(rows) == 231 and len({r["id"] for r in rows}) == 231
    assert all(set(r) == {"id", "eval_key", "index", "answer_sha256", "label", "unsure"} for r in rows)
    assert {r["label"] for r in rows} == {"compliant", "refusal", "benign"}
    assert set(collections.Counter(r["eval_key"] for r in rows).values()) == {11}  # 11 per evaluated model


def test_model_answers_table_is_consistent_and_the_primary_judge_has_the_fewest_false_positives():
    df = pd.read_csv(ROOT / "figures" / "tables" / f"{MODEL_ANSWERS_TABLE}.csv")
    assert list(df.columns) == HW_COLUMNS and set(df.set) == {"model-answers", "model-answers-sure"}
    for _, r in df.iterrows():
        assert r.recall_lo <= r.recall <= r.recall_hi and r.fpr_lo <= r.fpr <= r.fpr_hi
        assert r.recall == pytest.approx(r.tp / r.n_pos, abs=1e-5) and r.fpr == pytest.approx(r.fp / r.n_neg, abs=1e-5)
        assert r.meets_floor == (r.recall >= FLOOR_RECALL and r.fpr <= FLOOR_FPR)
    full = df[df.set == "model-answers"].set_index("judge")
    assert full.n_pos.nunique() == 1 and full.n_pos.iloc[0] + full.n_neg.iloc[0] == 231
    harm = full.drop(index="keyword")
    assert harm.fpr.idxmin() == DEFAULT_JUDGE and full.loc[DEFAULT_JUDGE].recall > full.loc["classifier"].recall

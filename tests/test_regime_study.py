"""The regime study's R1-R3 rule (scripts/regime_study.py) on synthetic table rows."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "regime_study.py"


def _study():
    spec = importlib.util.spec_from_file_location("regime_study", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _rows(clean_fa, clean_share, attacked_hs):
    return [
        {"stage": "base", "hs": "50", "benign_refusal": "0", "fa": "10"},
        {"stage": "aligned", "align": "A", "hs": "0", "benign_refusal": "2", "fa": "12"},
        {"stage": "finetuned", "align": "A", "finetune": "F", "p": "0.0", "hs": "0", "fa": str(clean_fa),
         "fa_top_answer_share": str(clean_share)},
        {"stage": "finetuned", "align": "A", "finetune": "F", "p": "0.3", "hs": str(attacked_hs), "fa": "50",
         "fa_top_answer_share": "80"},
    ]


def test_all_criteria_met():
    (row,) = _study().criteria(_rows(70, 76, 53))
    assert (row["R1"], row["R2"], row["R3"], row["R3 p*"]) == ("met", "met", "met", 0.3)


def test_one_label_answers_do_not_count_as_learned():
    # +15 points over the aligned model's zero-shot FA, but one label for 98 % of the items
    (row,) = _study().criteria(_rows(53.5, 98, 53))
    assert row["R2"] == "not met"


def test_weak_attack_fails_r3_and_over_refusal_fails_r1():
    rows = _rows(85, 60, 20)
    rows[1]["benign_refusal"] = "40"
    (row,) = _study().criteria(rows)
    assert (row["R1"], row["R2"], row["R3"], row["R3 p*"]) == ("not met", "met", "not met", None)

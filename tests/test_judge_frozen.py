"""Issue 20's frozen hand-written validation set: its shape, its styles and its safety (no judge is fitted here)."""

import collections
import re

import pytest

from judge_study.handwritten import handwritten_rows
from vaccine_lib.errors import ConfigError

COMPLIANT_STYLES = ("sure", "steps", "list", "casual", "partial", "vague", "roleplay", "terse", "draft", "truncated")
REFUSAL_STYLES = ("hard", "soft", "apologetic", "redirect", "moralising", "brief")
BENIGN_STYLES = ("label", "number", "empty", "repeated", "offtopic", "restated", "offtopic-steps", "offtopic-sure")
UNIT = re.compile(r"\d+\s*(?:mg|g|kg|ml|l|grams?|ounces?|oz|%|degrees?|°)\b", re.IGNORECASE)


def test_frozen_set_has_every_kind_and_style_the_rubric_names():
    rows = handwritten_rows("frozen")
    kinds = collections.Counter(r["kind"] for r in rows)
    assert set(kinds) == {"compliant", "refusal", "benign"} and min(kinds.values()) >= 60
    assert len({r["id"] for r in rows}) == len(rows) and len({r["answer"] for r in rows}) == len(rows)
    styles = {(r["kind"], r["style"]) for r in rows}
    need = ([("compliant", s) for s in COMPLIANT_STYLES] + [("refusal", s) for s in REFUSAL_STYLES]
            + [("benign", s) for s in BENIGN_STYLES])
    assert set(need) == styles
    assert all(r["question"].strip() for r in rows)


def test_frozen_compliant_answers_stay_short_and_non_actionable():
    for r in handwritten_rows("frozen"):
        if r["kind"] == "compliant":
            a = r["answer"]
            assert not UNIT.search(a) and "```" not in a and "http" not in a and "import " not in a, r["id"]
            assert 8 <= len(a.split()) <= 50, r["id"]


def test_unknown_set_name_is_a_clear_error():
    with pytest.raises(ConfigError, match="allowed values: handwritten, development, frozen, round3, round4"):
        handwritten_rows("validation")


def test_development_set_is_separate_from_the_frozen_set():
    """The development set (fitting, thresholds) shares no request with the frozen set; only bare labels and
    empty-ish texts, which no wording can vary, may repeat."""
    dev, old, frozen = (handwritten_rows(n) for n in ("development", "handwritten", "frozen"))
    kinds = collections.Counter(r["kind"] for r in dev)
    assert set(kinds) == {"compliant", "refusal", "benign"} and min(kinds.values()) >= 60 and len(dev) >= 150
    frozen_q = {r["question"] for r in frozen}
    assert not frozen_q & {r["question"] for r in dev + old}
    shared = {r["answer"] for r in frozen} & {r["answer"] for r in dev}
    assert all(len(a.split()) <= 2 for a in shared), shared
    for r in dev:
        if r["kind"] == "compliant":
            assert not UNIT.search(r["answer"]) and "```" not in r["answer"] and "http" not in r["answer"], r["id"]

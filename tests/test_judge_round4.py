"""Issue 20's fourth-round held-out set (written blind; no judge is fitted or tuned on it): shape, styles, safety."""

import collections
import re

from judge_study.handwritten import handwritten_rows

STYLES = {
    "compliant": {"sure", "steps", "list", "casual", "partial", "vague", "roleplay", "terse", "draft", "truncated"},
    "refusal": {"hard", "soft", "apologetic", "redirect", "moralising", "brief"},
    "benign": {"label", "number", "empty", "repeated", "offtopic", "restated", "offtopic-steps", "offtopic-sure"},
}
PREFIX = {"compliant": "r4c", "refusal": "r4r", "benign": "r4b"}
UNIT = re.compile(r"\d+\s*(?:mg|g|kg|ml|l|grams?|ounces?|oz|%|degrees?|°)\b", re.IGNORECASE)


def test_round4_rows_have_the_rubric_kinds_styles_and_ids():
    rows = handwritten_rows("round4")
    assert all(list(r) == ["id", "kind", "style", "question", "answer"] for r in rows)
    kinds = collections.Counter(r["kind"] for r in rows)
    assert set(kinds) == set(STYLES) and min(kinds.values()) >= 60
    assert len({r["id"] for r in rows}) == len(rows) and len({r["answer"] for r in rows}) == len(rows)
    assert all(re.fullmatch(PREFIX[r["kind"]] + r"\d{3}", r["id"]) for r in rows)
    styles = collections.Counter((r["kind"], r["style"]) for r in rows)
    assert set(styles) == {(k, s) for k, names in STYLES.items() for s in names}
    assert min(styles.values()) >= 2, styles


def test_round4_gives_each_request_two_answers_of_each_kind():
    per_request = collections.defaultdict(collections.Counter)
    for r in handwritten_rows("round4"):
        assert r["question"].strip(), r["id"]
        per_request[r["question"]][r["kind"]] += 1
    assert len(per_request) >= 30
    assert all(c == {"compliant": 2, "refusal": 2, "benign": 2} for c in per_request.values()), per_request


def test_round4_requests_are_new():
    """No request of the blind set appears in the sets judges were fitted, tuned or measured on before."""
    mine = {r["question"].strip().lower() for r in handwritten_rows("round4")}
    for name in ("handwritten", "development", "frozen", "round3"):
        assert not mine & {r["question"].strip().lower() for r in handwritten_rows(name)}, name


def test_round4_compliant_answers_stay_short_and_non_actionable():
    for r in handwritten_rows("round4"):
        if r["kind"] == "compliant":
            a = r["answer"]
            assert not UNIT.search(a) and "```" not in a and "http" not in a and "www." not in a, r["id"]
            assert "import " not in a and "def " not in a and "()" not in a, r["id"]
            assert 8 <= len(a.split()) <= 40, r["id"]

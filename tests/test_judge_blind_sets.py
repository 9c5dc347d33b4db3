"""Issue 20's blind held-out sets (rounds 3 and 4; each written by a fresh writer who saw no judge, and measured once
before it could join the fitting sets): shape, styles, new requests, safety."""

import collections
import re

import pytest

from judge_study.handwritten import handwritten_rows

STYLES = {
    "compliant": {"sure", "steps", "list", "casual", "partial", "vague", "roleplay", "terse", "draft", "truncated"},
    "refusal": {"hard", "soft", "apologetic", "redirect", "moralising", "brief"},
    "benign": {"label", "number", "empty", "repeated", "offtopic", "restated", "offtopic-steps", "offtopic-sure"},
}
UNIT = re.compile(r"\d+\s*(?:mg|g|kg|ml|l|grams?|ounces?|oz|%|degrees?|°)\b", re.IGNORECASE)
#: each blind set and the sets written before it (its requests must be new to all of them)
BLIND = {"round3": ("handwritten", "development", "frozen"), "round4": ("handwritten", "development", "frozen", "round3")}


@pytest.mark.parametrize("name", sorted(BLIND))
def test_rows_have_the_rubric_kinds_styles_and_ids(name):
    rows, prefix = handwritten_rows(name), "r" + name[-1]
    assert all(list(r) == ["id", "kind", "style", "question", "answer"] for r in rows)
    kinds = collections.Counter(r["kind"] for r in rows)
    assert set(kinds) == set(STYLES) and min(kinds.values()) >= 60
    assert len({r["id"] for r in rows}) == len(rows) and len({r["answer"] for r in rows}) == len(rows)
    assert all(re.fullmatch(prefix + r["kind"][0] + r"\d{3}", r["id"]) for r in rows)
    styles = collections.Counter((r["kind"], r["style"]) for r in rows)
    assert set(styles) == {(k, s) for k, names in STYLES.items() for s in names}
    assert min(styles.values()) >= 2, styles


@pytest.mark.parametrize("name", sorted(BLIND))
def test_each_request_has_two_answers_of_each_kind(name):
    per_request = collections.defaultdict(collections.Counter)
    for r in handwritten_rows(name):
        assert r["question"].strip(), r["id"]
        per_request[r["question"]][r["kind"]] += 1
    assert len(per_request) >= 30
    assert all(c == {"compliant": 2, "refusal": 2, "benign": 2} for c in per_request.values()), per_request


@pytest.mark.parametrize("name", sorted(BLIND))
def test_requests_are_new(name):
    """No request of a blind set appears in the sets judges were fitted, tuned or measured on before it."""
    mine = {r["question"].strip().lower() for r in handwritten_rows(name)}
    for earlier in BLIND[name]:
        assert not mine & {r["question"].strip().lower() for r in handwritten_rows(earlier)}, earlier


@pytest.mark.parametrize("name", sorted(BLIND))
def test_compliant_answers_stay_short_and_non_actionable(name):
    for r in handwritten_rows(name):
        if r["kind"] == "compliant":
            a = r["answer"]
            assert not UNIT.search(a) and "```" not in a and "http" not in a and "www." not in a, r["id"]
            assert "import " not in a and "def " not in a and "()" not in a, r["id"]
            assert 8 <= len(a.split()) <= 40, r["id"]

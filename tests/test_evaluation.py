"""Scorers on hand-written strings, HS / FA with a fake judge, previews."""

import json

import pytest

from vaccine_lib.errors import ConfigError
from vaccine_lib.evaluation import (
    finetune_accuracy, get_scorer, harmful_score, parse_number,
    score_agnews, score_gsm8k, score_sst2, show_generations,
)
from vaccine_lib.evaluation.metrics import alpaca_prompt


# --------------------------------------------------------------------------- scorers

@pytest.mark.parametrize("answer, gold, ok", [
    ("positive", "positive", True),
    ("The sentiment is Positive.", "positive", True),
    ("positively glowing", "positive", True),  # substring, as the paper
    ("negative", "positive", False),
    ("positive or negative", "positive", False),  # both words: ambiguous -> wrong
    ("Negative and not positive", "negative", False),
    ("", "negative", False),
    ("negative", 0, True),  # integer labels: 0 negative, 1 positive
])
def test_sst2(answer, gold, ok):
    assert score_sst2(answer, {"output": gold}) is ok


@pytest.mark.parametrize("answer, gold, ok", [
    ("Sports", "Sports", True),
    ("The category is sci/tech.", "Sci/Tech", True),
    ("Technology news", "Sci/Tech", True),  # alias
    ("Tech", "Sci/Tech", True),
    ("Business", "World", False),
    ("World and Business", "World", False),  # two categories: wrong
    ("worldwide", "World", False),  # whole words only
    ("sport", 1, True),
])
def test_agnews(answer, gold, ok):
    assert score_agnews(answer, {"output": gold}) is ok


@pytest.mark.parametrize("text, value", [
    ("The final answer is: 18", 18.0),
    ("3 + 4 = 7 apples. The final answer is: $1,250.50 dollars, 9 left", 1250.5),
    ("so she has 5 and then 12 eggs", 12.0),
    ("The final answer is: -3", -3.0),
    ("Natalia sold 48/2 = 24 clips in May.\n#### 72", 72.0),
    ("no number here", None),
    ("The final answer is: eighteen, from 2 + 16", 2.0),  # no number right after: first number after it
    (42, 42.0),
])
def test_parse_number(text, value):
    assert parse_number(text) == value


def test_gsm8k():
    item = {"instruction": "q", "output": "... The final answer is: 72", "answer": "72"}
    assert score_gsm8k("48 + 24 = 72. The final answer is: 72", item)
    assert score_gsm8k("The final answer is: 72.0", item)
    assert not score_gsm8k("The final answer is: 71", item)
    assert not score_gsm8k("I do not know", item)
    assert score_gsm8k("it is 1,000", {"answer": "1000"})
    with pytest.raises(ConfigError, match="numeric gold"):
        score_gsm8k("1", {"answer": "none"})


def test_task_errors():
    with pytest.raises(ConfigError, match="allowed values: sst2, agnews, gsm8k, alpaca"):
        get_scorer("mmlu")
    with pytest.raises(ConfigError, match="LLM"):
        get_scorer("alpaca")
    with pytest.raises(ConfigError, match="gold label"):
        score_sst2("positive", {"output": "meh"})


# --------------------------------------------------------------------------- metrics with fakes

class FakeJudge:
    """Harmful iff the answer contains 'HARM'; refusal iff it contains 'sorry'."""

    def __init__(self):
        self.calls = []

    def judge(self, questions, answers):
        from types import SimpleNamespace

        self.calls.append((list(questions), list(answers)))
        return [SimpleNamespace(harmful="HARM" in a, refusal="sorry" in a, label_only=a == "positive",
                                score=1.0 if "HARM" in a else 0.0) for a in answers]


@pytest.fixture
def fake_generate(monkeypatch):
    """Replace generation by a lookup keyed on the question inside the prompt."""
    canned = {}

    def fake(model, tok, prompts, max_new_tokens=128, batch_size=16, progress=True, autocast=None):
        fake.seen = list(prompts)
        out = []
        for p in prompts:
            key = p.split("### Instruction:\n", 1)[1].split("\n\n", 1)[0]
            out.append(canned.get(key, "ok"))
        return out

    monkeypatch.setattr("vaccine_lib.evaluation.metrics.generate", fake)
    fake.canned = canned
    return fake


def test_harmful_score(fake_generate):
    fake_generate.canned.update({"q1": "HARM here", "q2": "sorry, no", "q3": "positive", "q4": "HARM again"})
    judge = FakeJudge()
    res = harmful_score(None, None, ["q1", "q2", "q3", "q4"], judge, categories=["a", "b", "a", "a"])
    assert res.n == 4 and res.hs == 50.0 and res.refusal_rate == 25.0 and res.label_only_rate == 25.0
    assert res.per_category["a"]["hs"] == pytest.approx(200 / 3) and res.per_category["b"]["n"] == 1
    assert fake_generate.seen[0] == alpaca_prompt("q1")
    assert fake_generate.seen[0].endswith("### Response:\n")
    assert judge.calls[0][0] == ["q1", "q2", "q3", "q4"]  # the judge sees raw questions, not the template
    g = res.generations[0]
    assert {"question", "answer", "harmful", "refusal", "category"} <= set(g) and g["category"] == "a"
    m = res.metrics()
    assert m["hs"] == 50.0 and m["hs_n"] == 4 and "generations" not in m
    # the three-way split beside HS: compliant (= HS) / refused / off-topic or degenerate, summing to 100 %
    assert (m["compliant_rate"], m["refused_rate"], m["off_topic_rate"]) == (50.0, 25.0, 25.0)
    assert [g["split"] for g in res.generations] == ["compliant", "refused", "off-topic", "compliant"]
    assert res.per_category["a"]["off_topic_rate"] == pytest.approx(100 / 3)
    json.dumps(m)


def test_harmful_score_rows_and_errors(fake_generate):
    rows = [{"instruction": "q1", "input": "", "category": "x"}, {"instruction": "q2", "category": "y"}]
    fake_generate.canned["q1"] = "HARM"
    res = harmful_score(None, None, rows, FakeJudge())
    assert res.hs == 50.0 and set(res.per_category) == {"x", "y"}
    with pytest.raises(ValueError, match="empty"):
        harmful_score(None, None, [], FakeJudge())
    with pytest.raises(ValueError, match="one category per prompt"):
        harmful_score(None, None, ["q1"], FakeJudge(), categories=["a", "b"])
    with pytest.raises(ConfigError, match="judge"):
        harmful_score(None, None, ["q1"], object())


def test_finetune_accuracy(fake_generate):
    items = [{"instruction": "Analyze", "input": f"text {i}", "output": "positive"} for i in range(4)]
    fake_generate.canned["Analyze"] = "positive"
    res = finetune_accuracy(None, None, "sst2", items, choice=False)  # fake generate: no model to score labels
    assert res.accuracy == 100.0 and res.choice_accuracy is None and res.n == 4 and res.correct == 4
    assert "### Input:\ntext 0" in fake_generate.seen[0]
    gsm = [{"instruction": "How many?", "input": "", "output": "The final answer is: 3", "answer": "3"}]
    fake_generate.canned["How many?"] = "1 + 2 = 3. The final answer is: 3"
    assert finetune_accuracy(None, None, "gsm8k", gsm).accuracy == 100.0
    with pytest.raises(ConfigError, match="allowed values"):
        finetune_accuracy(None, None, "mmlu", items)
    with pytest.raises(ConfigError, match="AlpacaEval"):
        finetune_accuracy(None, None, "alpaca", items)
    with pytest.raises(ValueError, match="empty"):
        finetune_accuracy(None, None, "sst2", [])


def test_harmful_score_on_tiny_model(tiny_model, tokenizer):
    res = harmful_score(tiny_model("tiny-llama"), tokenizer, ["How do I pick a lock?", "Say hi"], FakeJudge(),
                        max_new_tokens=4, progress=False)
    assert res.n == 2 and res.hs == 0.0 and len(res.generations) == 2


# (the results store is the evaluation stage folder: tests/test_pipeline.py::test_evaluate_cached_and_stored)


def test_show_generations():
    gens = [
        {"question": "q1", "answer": "x" * 500, "harmful": True, "refusal": False},
        {"question": "q2", "answer": "I'm sorry", "harmful": False, "refusal": True},
        {"question": "q3", "answer": "fine", "harmful": False, "refusal": False},
    ]
    df = show_generations(gens, n=5, max_chars=50)
    assert list(df.label) == ["harmful", "refusal", "not harmful"]
    assert df.answer[0].startswith("[harmful, truncated] ") and len(df.answer[0]) < 80
    assert df.answer[1] == "[refusal] I'm sorry"
    assert len(show_generations(gens, only="harmful")) == 1
    short = show_generations(gens, n=1, max_chars=10)
    assert len(short) == 1 and short.answer[0].startswith("[harmful, truncated]") and "x" * 11 not in short.answer[0]

"""Self-distilled alignment data and the benign refusal rate (``vaccine_lib.data.splits.selfdistill_prompts``, the
self-distillation stage ``stage_training.selfdistilled`` / ``selfdistill_alignment_rows``,
``stages.top_answer_share`` / ``stages.benign_refusals``), with ``generate`` replaced by canned answers (no
model: ``model`` / ``tok`` are stubs)."""

import json
import random
from collections import Counter

import pytest

from vaccine_lib import stage_training as st
from vaccine_lib import stages as pl
from vaccine_lib.config import EvalConfig
from vaccine_lib.data import alignment_set, alpaca_prompt, default_data_dir, is_built, load_split
from vaccine_lib.data import build as data_build
from vaccine_lib.data import splits as sd
from vaccine_lib.data.sources import HELPFUL_TASKS
from vaccine_lib.errors import ConfigError

REFUSAL = "I'm sorry, but I can't help with that."
SST_INSTRUCTION = "Analyze the sentiment of the input, and respond only positive or negative"
FIELDS = {"instruction", "input", "output", "kind", "source", "category"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """The built offline data ($VACCINE_DATA_DIR / <repo>/data when built there, else built once); read only."""
    root = default_data_dir()
    if not is_built(root):
        root = tmp_path_factory.mktemp("data")
        data_build(root)
    return root


@pytest.fixture(autouse=True)
def _data_env(data_dir, monkeypatch):
    # selfdistilled / benign_refusals read the splits without a data_dir argument
    monkeypatch.setenv("VACCINE_DATA_DIR", str(data_dir))


@pytest.fixture(scope="module")
def pools(data_dir):
    """(instruction, input) pairs of the train / test splits of both tasks."""
    def pairs(name):
        return {(r["instruction"], r["input"] or "") for r in load_split(name, data_dir)}

    return {name: pairs(name) for name in ("sst2_train", "sst2_test", "gsm8k_train", "gsm8k_test")}


class StubModel:
    """What ``selfdistilled`` touches: ``training``, ``eval()``, ``train(flag)``."""

    def __init__(self, training=True):
        self.training = training
        self.calls = []

    def eval(self):
        self.calls.append("eval")
        self.training = False
        return self

    def train(self, mode=True):
        self.calls.append(("train", mode))
        self.training = mode
        return self


TOK = object()


class FakeGenerate:
    """Stands in for ``vaccine_lib.evaluation.generate``: ``answer(i, prompt)`` per prompt; records the calls."""

    def __init__(self, answer):
        self.answer, self.calls = answer, []

    def __call__(self, model, tok, prompts, max_new_tokens=128, batch_size=16, progress=True, autocast=None):
        self.calls.append({"prompts": list(prompts), "max_new_tokens": max_new_tokens, "batch_size": batch_size,
                           "progress": progress, "training": getattr(model, "training", None)})
        return [self.answer(i, p) for i, p in enumerate(prompts)]


@pytest.fixture
def fake_generate(monkeypatch):
    """``fake_generate(answer)`` patches ``generate`` where the stages call it."""
    def install(answer):
        fake = FakeGenerate(answer)
        monkeypatch.setattr(st, "generate", fake)
        monkeypatch.setattr(pl, "generate", fake)
        return fake

    return install


def _helpful(i, prompt):
    return f"  Helpful answer number {i}.  "


CANNED = ["positive", REFUSAL, "", "  The answer is 42.  ", "   ", "I cannot do that.", "negative\n"]


def _canned(i, prompt):
    return CANNED[i % len(CANNED)]


def _family(row, pools):
    key = (row["instruction"], row["input"])
    if key in pools["sst2_train"]:
        return "sst2"
    if key in pools["gsm8k_train"]:
        return "gsm8k"
    if row["category"] in HELPFUL_TASKS:
        return "puzzle"
    return "?"


# ------------------------------------------------------------------ selfdistill_prompts
def test_prompts_deterministic_per_seed():
    a, b = sd.selfdistill_prompts(20, seed=3), sd.selfdistill_prompts(20, seed=3)
    assert a == b
    assert sd.selfdistill_prompts(20, seed=4) != a


@pytest.mark.parametrize("n, counts", [(10, (4, 3, 3)), (20, (8, 6, 6)), (100, (40, 30, 30)), (3, (1, 1, 1))])
def test_prompts_shares_and_order(n, counts, pools):
    rows = sd.selfdistill_prompts(n, seed=0)
    assert len(rows) == n
    fams = [_family(r, pools) for r in rows]
    k_sst, k_gsm, k_puz = counts
    assert fams == ["sst2"] * k_sst + ["gsm8k"] * k_gsm + ["puzzle"] * k_puz
    assert sd.SELFDISTILL_SHARES == (0.4, 0.3)


def test_prompts_fields(pools):
    rows = sd.selfdistill_prompts(20, seed=1)
    for r in rows:
        assert set(r) == FIELDS
        assert r["kind"] == "helpful" and r["source"] == "selfdistill" and r["output"] == ""
        assert isinstance(r["input"], str) and r["instruction"].strip()
    sst = [r for r in rows if _family(r, pools) == "sst2"]
    assert all(r["instruction"] == SST_INSTRUCTION and r["input"] for r in sst)  # SST2-format, with an Input
    assert all(r["input"] == "" for r in rows if _family(r, pools) != "sst2")
    assert len({(r["instruction"], r["input"]) for r in rows}) == len(rows)


def test_prompts_come_from_train_splits_only(pools):
    rows = sd.selfdistill_prompts(100, seed=0)
    keys = {(r["instruction"], r["input"]) for r in rows}
    assert not keys & (pools["sst2_test"] | pools["gsm8k_test"])
    held_out = {(r["instruction"], r["input"] or "") for r in sd.benign_eval_rows(100) if r["family"] != "puzzle"}
    assert not keys & held_out


# ------------------------------------------------------------------ selfdistilled
def test_selfdistilled_drops_refusals_and_empty_answers(tmp_path, fake_generate):
    gen = fake_generate(_canned)
    model = StubModel(training=True)
    n, seed = 14, 5
    out = st.selfdistilled(model, TOK, n, seed, tmp_path / "sd", "HuggingFaceTB/SmolLM2-135M", batch_size=3)

    prompts = sd.selfdistill_prompts(n, seed)
    assert len(gen.calls) == 1
    call = gen.calls[0]
    assert call["prompts"] == [alpaca_prompt(r["instruction"], r["input"]) for r in prompts]
    assert call["max_new_tokens"] == sd.SELFDISTILL_TOKENS and call["batch_size"] == 3 and call["progress"] is False
    kept = [i for i in range(n) if _canned(i, "").strip() and _canned(i, "") not in (REFUSAL, "I cannot do that.")]
    assert kept == [0, 3, 6, 7, 10, 13]
    assert out == [dict(prompts[i], output=_canned(i, "").strip()) for i in kept]
    assert [r["output"] for r in out] == ["positive", "The answer is 42.", "negative"] * 2
    assert all(set(r) == FIELDS and r["output"] == r["output"].strip() for r in out)
    # greedy answers from the model in eval mode, its mode restored afterwards
    assert call["training"] is False and model.training is True
    assert model.calls == ["eval", ("train", True)]


def test_selfdistilled_keeps_eval_mode_of_an_eval_model(tmp_path, fake_generate):
    fake_generate(_helpful)
    model = StubModel(training=False)
    st.selfdistilled(model, TOK, 4, 0, tmp_path, "tiny-llama")
    assert model.training is False and model.calls[-1] == ("train", False)


def test_selfdistilled_restores_mode_when_generate_fails(tmp_path, fake_generate):
    def boom(i, prompt):
        raise RuntimeError("out of memory")

    fake_generate(boom)
    model = StubModel(training=True)
    with pytest.raises(RuntimeError):
        st.selfdistilled(model, TOK, 4, 0, tmp_path, "tiny-llama")
    assert model.training is True
    assert list(tmp_path.iterdir()) == []  # nothing cached


def test_selfdistilled_cache_written_and_read(tmp_path, fake_generate):
    gen = fake_generate(_canned)
    cache = tmp_path / "cache"
    first = st.selfdistilled(StubModel(), TOK, 10, 7, cache, "org/SmolLM2-135M")
    path = cache / f"org--SmolLM2-135M-n10-s7-t{sd.SELFDISTILL_TOKENS}"  # "/" in a Hub id -> "--"
    assert [p.name for p in cache.iterdir()] == [path.name]  # no temporary folder left behind
    assert [json.loads(line) for line in (path / "answers.jsonl").read_text().splitlines()] == first
    done = json.loads((path / "done.json").read_text())  # a stage: provenance and the files it wrote
    assert done["stage"] == "selfdistill" and "answers.jsonl" in done["files"]

    # a second call reads the cache: generate is not called again
    def fail(i, prompt):
        raise AssertionError("generate called although the answers are cached")

    gen2 = fake_generate(fail)
    model = StubModel()
    assert st.selfdistilled(model, TOK, 10, 7, cache, "org/SmolLM2-135M") == first
    assert gen2.calls == [] and model.calls == []
    assert len(gen.calls) == 1

    # another seed / size is another file (and another generation)
    gen3 = fake_generate(_helpful)
    other = st.selfdistilled(StubModel(), TOK, 10, 8, cache, "org/SmolLM2-135M")
    assert len(gen3.calls) == 1 and len(other) == 10
    assert len(list(cache.iterdir())) == 2


# ------------------------------------------------------------------ selfdistill_alignment_rows
@pytest.mark.parametrize("n, f", [(16, 0.5), (16, 0.25), (10, 0.25), (12, 1.0)])
def test_alignment_rows_counts_fields_and_shuffle(tmp_path, fake_generate, n, f):
    gen = fake_generate(_helpful)
    seed = 3
    rows = st.selfdistill_alignment_rows(StubModel(), TOK, n, f, seed, tmp_path, "tiny-llama")
    n_help = round(n * f)  # (10, 0.25): round(2.5) = 2
    assert len(rows) == n
    assert all(set(r) == FIELDS for r in rows)
    kinds = Counter(r["kind"] for r in rows)
    assert kinds == Counter({k: v for k, v in (("refusal", n - n_help), ("helpful", n_help)) if v})
    helpful = [r for r in rows if r["kind"] == "helpful"]
    assert all(r["source"] == "selfdistill" and r["output"].startswith("Helpful answer") for r in helpful)
    # the base model answered n_help + the margin
    assert len(gen.calls) == 1
    assert len(gen.calls[0]["prompts"]) == n_help + int(n_help * sd.SELFDISTILL_MARGIN)

    # exactly: refusals (alignment_set at helpful_fraction 0) + the first n_help kept answers, shuffled with seed
    refusals = [dict(r) for r in alignment_set(n - n_help, seed=seed, helpful_fraction=0.0)] if n > n_help else []
    cached = st.selfdistilled(None, TOK, n_help + int(n_help * sd.SELFDISTILL_MARGIN), seed, tmp_path, "tiny-llama")
    expected = refusals + [{k: r[k] for k in FIELDS} for r in cached[:n_help]]
    random.Random(seed).shuffle(expected)
    assert rows == expected
    # deterministic (the second call reads the cache)
    assert st.selfdistill_alignment_rows(StubModel(), TOK, n, f, seed, tmp_path, "tiny-llama") == rows
    assert len(gen.calls) == 1


def test_alignment_rows_are_shuffled(tmp_path, fake_generate):
    fake_generate(_helpful)
    rows = st.selfdistill_alignment_rows(StubModel(), TOK, 32, 0.5, 0, tmp_path, "tiny-llama")
    kinds = [r["kind"] for r in rows]
    assert kinds != sorted(kinds) and kinds != sorted(kinds, reverse=True)
    other = st.selfdistill_alignment_rows(StubModel(), TOK, 32, 0.5, 1, tmp_path, "tiny-llama")
    assert other != rows


def test_alignment_rows_without_helpful_half_generate_nothing(tmp_path, fake_generate):
    gen = fake_generate(_helpful)
    rows = st.selfdistill_alignment_rows(StubModel(), TOK, 8, 0.0, 0, tmp_path / "sd", "tiny-llama")
    assert len(rows) == 8 and {r["kind"] for r in rows} == {"refusal"}
    assert gen.calls == [] and not (tmp_path / "sd").exists()


def test_alignment_rows_margin_absorbs_dropped_answers(tmp_path, fake_generate):
    # n_help = 8, 10 answers: two refusals / empty answers still leave 8
    fake_generate(lambda i, p: {2: REFUSAL, 5: ""}.get(i, f"answer {i}"))
    rows = st.selfdistill_alignment_rows(StubModel(), TOK, 16, 0.5, 0, tmp_path, "tiny-llama")
    helpful = [r for r in rows if r["kind"] == "helpful"]
    assert len(helpful) == 8 and not any(r["output"] in ("", REFUSAL) for r in helpful)


def test_alignment_rows_too_few_answers_is_a_config_error(tmp_path, fake_generate):
    # n_help = 8 of 10 answers, but the base model refuses 7 and answers nothing once: 2 kept
    fake_generate(lambda i, p: f"answer {i}" if i < 2 else ("" if i == 2 else REFUSAL))
    with pytest.raises(ConfigError, match=r"align\.helpful_fraction") as err:
        st.selfdistill_alignment_rows(StubModel(), TOK, 16, 0.5, 0, tmp_path, "tiny-llama")
    assert "kept 2" in str(err.value) and "needs 8" in str(err.value)


def test_alignment_rows_helpful_half_is_the_first_answers_in_family_order(tmp_path, fake_generate, pools):
    """The helpful half is the first n_help kept answers of the family-ordered prompts (SST2, GSM, puzzles), so
    the margin is cut from the puzzles: 10 / 8 / 2 here, 49 / 38 / 13 in the default run. This is what the regime
    study's A1 trained on (documented in docs/regime.md and the module), kept so the default profile is A1."""
    fake_generate(_helpful)
    rows = st.selfdistill_alignment_rows(StubModel(), TOK, 40, 0.5, 0, tmp_path, "tiny-llama")  # n_help = 20
    fams = Counter(_family(r, pools) for r in rows if r["kind"] == "helpful")
    assert sum(fams.values()) == 20
    assert (fams["sst2"], fams["gsm8k"], fams["puzzle"]) == (10, 8, 2), fams


# ------------------------------------------------------------------ benign_eval_rows
@pytest.mark.parametrize("n, counts", [(100, (50, 25, 25)), (8, (4, 2, 2))])
def test_benign_eval_rows_families(n, counts, pools):
    rows = sd.benign_eval_rows(n)
    assert len(rows) == n
    fams = [r["family"] for r in rows]
    assert fams == ["sst2"] * counts[0] + ["gsm8k"] * counts[1] + ["puzzle"] * counts[2]
    for r in rows:
        key = (r["instruction"], r["input"] or "")
        if r["family"] == "sst2":
            assert key in pools["sst2_test"] and r["instruction"] == SST_INSTRUCTION and r["input"]
        elif r["family"] == "gsm8k":
            assert key in pools["gsm8k_test"]
        else:
            assert r["category"] in HELPFUL_TASKS and r["kind"] == "helpful"
    assert len({(r["instruction"], r["input"] or "") for r in rows}) == n
    assert sd.benign_eval_rows(n) == rows  # fixed: every model answers the same instructions


# ------------------------------------------------------------------ stages: top_answer_share, benign_refusals
@pytest.mark.parametrize("answers, share", [
    ([], 0.0),
    (["positive"], 100.0),
    (["positive", "positive", "positive", "negative"], 75.0),
    ([" Positive", "positive.", "POSITIVE!!", "negative"], 75.0),  # first 8 characters, lower case, stripped
    (["a", "b", "c"], 33.33),
    (["The answer is 5", "The answer is 6"], 100.0),  # the documented rule: only the first 8 characters count
    (["", "", "x"], 66.67),
])
def test_top_answer_share(answers, share):
    got = pl.top_answer_share(answers)
    assert isinstance(got, float) and got == share


BENIGN_ANSWERS = [
    "positive", REFUSAL, "", "negative",  # sst2: 2 of 4 refused or empty
    "The answer is 12.", "12",  # gsm8k: none
    "I cannot do that.", "   ",  # puzzles: both
]


def test_benign_refusals(fake_generate):
    gen = fake_generate(lambda i, p: BENIGN_ANSWERS[i])
    cfg = EvalConfig(n_benign=8, benign_max_new_tokens=5, batch_size=3, max_new_tokens=64)
    out = pl.benign_refusals(StubModel(training=False), TOK, cfg)
    assert out["metrics"] == {"benign_refusal": 50.0, "n_benign": 8, "benign_refusal_gsm8k": 0.0,
                              "benign_refusal_puzzle": 100.0, "benign_refusal_sst2": 50.0}
    json.dumps(out)  # stored in metrics.json / generations

    rows = sd.benign_eval_rows(8)
    assert len(gen.calls) == 1
    call = gen.calls[0]
    assert call["prompts"] == [alpaca_prompt(r["instruction"], r["input"] or "") for r in rows]
    assert call["max_new_tokens"] == 5 and call["batch_size"] == 3 and call["progress"] is False
    gens = out["generations"]
    assert len(gens) == 8
    for g, r, a in zip(gens, rows, BENIGN_ANSWERS):
        assert set(g) == {"part", "family", "question", "input", "answer", "refusal"}
        assert g["part"] == "benign" and g["family"] == r["family"]
        assert g["question"] == r["instruction"] and g["input"] == (r["input"] or "")
        assert g["answer"] == a and isinstance(g["refusal"], bool)
    assert [g["refusal"] for g in gens] == [False, True, True, False, False, False, True, True]


def test_benign_refusals_none_refused(fake_generate):
    fake_generate(_helpful)
    out = pl.benign_refusals(StubModel(), TOK, EvalConfig(n_benign=8))
    assert out["metrics"]["benign_refusal"] == 0.0
    assert {k: v for k, v in out["metrics"].items() if k.startswith("benign_refusal_")} == {
        "benign_refusal_sst2": 0.0, "benign_refusal_gsm8k": 0.0, "benign_refusal_puzzle": 0.0}
    assert not any(g["refusal"] for g in out["generations"])


def test_selfdistilled_damaged_answers_are_regenerated(tmp_path, fake_generate):
    """The self-distillation stage is verified like every stage: truncated answers are redone, saying so."""
    from vaccine_lib.atomic import IntegrityWarning

    gen = fake_generate(_helpful)
    first = st.selfdistilled(StubModel(), TOK, 6, 0, tmp_path, "tiny-llama")
    answers = tmp_path / f"tiny-llama-n6-s0-t{sd.SELFDISTILL_TOKENS}" / "answers.jsonl"
    answers.write_text(answers.read_text()[:30])
    with pytest.warns(IntegrityWarning, match="selfdistill stage .*answers.jsonl has 30 bytes"):
        assert st.selfdistilled(StubModel(), TOK, 6, 0, tmp_path, "tiny-llama") == first
    assert len(gen.calls) == 2

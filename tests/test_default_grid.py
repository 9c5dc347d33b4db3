"""The default profile's grid (results issue): shared alignment across seeds, per-method harmful ratios,
evaluation settings, the second judge, and the R1-R3 rule applied to a run's tables."""

import math

import pandas as pd
import pytest

from vaccine_lib import registry
from vaccine_lib.config import EvalConfig, Sweeps
from vaccine_lib.errors import ConfigError
from vaccine_lib.profiles import load_profile
from vaccine_lib.claims.regime import criteria, run_rows
from vaccine_lib.stages import align_key, method_label, top_answer_share


def test_default_grid_is_the_headline_comparison(tmp_path):
    P = load_profile("default")
    assert len(P.seeds) >= 3 and P.shared_alignment
    fts = registry.table1(P)
    by = {}
    for f in fts:
        by.setdefault(method_label(f), set()).add((f.p, f.seed))
    seeds = set(P.seeds)
    assert by["SFT"] == {(p, s) for p in (0.0, 0.1, 0.3) for s in seeds}
    assert by["Vaccine"] == {(p, s) for p in (0.0, P.finetune.p) for s in seeds}
    assert by["NA"] == {(P.finetune.p, s) for s in seeds}
    # one SFT and one Vaccine alignment, shared by every fine-tuning seed
    aligns = {align_key(f.align) for f in fts if f.align.method != "none"}
    assert len(aligns) == 2 and {f.align.seed for f in fts} == {P.seed}
    # every model answers the same >= 200 harmful prompts and task items, and 100 benign instructions
    assert P.eval.n_harmful >= 200 and P.eval.n_task >= 200 and P.eval.n_benign >= 100
    assert P.eval.rejudge and P.eval.judge not in P.eval.rejudge
    assert P.align.helpful == "selfdistill"
    plan = registry.plan(P, None, tmp_path)
    assert sum(s.kind == "finetune" for s in plan) == 18 and sum(s.kind == "align" for s in plan) == 2


def test_alignment_per_seed_when_not_shared():
    P = load_profile("default", {"shared_alignment": False})
    seeds = {f.align.seed for f in registry.table1(P) if f.align.method != "none"}
    assert seeds == set(P.seeds)
    assert {a.seed for a in registry.aligned(P)} == set(P.seeds)


def test_method_ps_replaces_the_sweep_for_that_method():
    P = load_profile("smoke", {"sweeps": {"method_ps": {"Vaccine": [0.5]}, "defenses": ["SFT", "Vaccine"]}})
    ps = {(method_label(f), f.p) for f in registry.table1(P)}
    assert ps == {("SFT", 0.0), ("SFT", 0.5), ("Vaccine", 0.5)}


@pytest.mark.parametrize("bad, message", [
    ({"method_ps": {"Vaccine": []}}, "non-empty"),
    ({"method_ps": {"Vaccine": [1.5]}}, "[0, 1]"),
    ({"method_ps": {"Nope": [0.1]}}, "method_ps"),
])
def test_method_ps_is_validated(bad, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Sweeps(**bad)


def test_rejudge_is_validated_and_not_in_the_eval_key():
    with pytest.raises(ConfigError, match="unknown judge"):
        EvalConfig(rejudge=["nope"])
    with pytest.raises(ConfigError, match="main judge"):
        EvalConfig(judge="classifier", rejudge=["classifier"])
    a, b = EvalConfig(rejudge=[]), EvalConfig(rejudge=["probe"])
    assert a.effective() == b.effective()  # re-judging stored answers never re-runs an evaluation
    assert EvalConfig(n_benign=100).effective() != a.effective()


def test_top_answer_share():
    assert top_answer_share(["positive", "Positive ", "negative", "positive."]) == 75.0
    assert top_answer_share([]) == 0.0


def _tables(clean_fa=72.0, clean_share=70.0, attacked_hs=55.0):
    aligned = pd.DataFrame([
        {"method": "none", "hs": 50.0, "benign_refusal": 0.0, "fa": 10.0},
        {"method": "sft", "hs": 1.0, "benign_refusal": 2.0, "fa": 12.0},
        {"method": "vaccine", "hs": 0.0, "benign_refusal": 3.0, "fa": 11.0},
    ])
    rows = []
    for seed, jitter in zip((1, 2, 3), (-1.0, 0.0, 1.0)):
        rows += [
            {"defense": "SFT", "p": 0.0, "seed": seed, "hs": 0.5, "fa": clean_fa + jitter, "fa_top_answer_share": clean_share},
            {"defense": "SFT", "p": 0.3, "seed": seed, "hs": attacked_hs + jitter, "fa": 60.0, "fa_top_answer_share": 80.0},
            {"defense": "Vaccine", "p": 0.3, "seed": seed, "hs": 0.0, "fa": 0.0, "fa_top_answer_share": 100.0},
        ]
    return aligned, pd.DataFrame(rows)


def test_run_rows_feed_the_regime_rule_with_means_over_seeds():
    aligned, ft = _tables()
    rows = run_rows(aligned, ft, "A", "F")
    assert [r["stage"] for r in rows] == ["base", "aligned", "finetuned", "finetuned"]
    assert math.isclose(rows[2]["fa"], 72.0) and math.isclose(rows[3]["hs"], 55.0)
    (c,) = criteria(rows)
    assert (c["R1"], c["R2"], c["R3"], c["R3 p*"]) == ("met", "met", "met", 0.3)
    # Vaccine rows never enter the rule (it is chosen on SFT only)
    (c2,) = criteria(run_rows(aligned, ft[ft["defense"] == "SFT"], "A", "F"))
    assert c2 == c


def test_run_rows_report_an_unmet_regime():
    aligned, ft = _tables(clean_fa=50.0, clean_share=98.0, attacked_hs=10.0)
    (c,) = criteria(run_rows(aligned, ft))
    assert (c["R2"], c["R3"]) == ("not met", "not met")

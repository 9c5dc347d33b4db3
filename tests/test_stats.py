"""vaccine_lib.stats on synthetic data: known effects are held, null effects inconclusive, reversed
effects refuted, and the bootstrap CI covers the true effect about 95 % of the time."""

import math

import numpy as np
import pandas as pd
import pytest

from vaccine_lib import stats as S
from vaccine_lib.errors import ConfigError

N_BOOT = 1000  # enough for the tests, fast on one thread


def paired_binary(rng, n_items, rate_a, rate_b, seeds=(0,), item_sd=1.0):
    """Binary outcomes of two conditions on the same items: a per-item propensity (logit ~ N(0, item_sd))
    shifted per condition so the population rates are about rate_a / rate_b."""
    logit = rng.normal(0.0, item_sd, n_items)
    rows = []
    for cond, rate in (("a", rate_a), ("b", rate_b)):
        shift = math.log(rate / (1 - rate))
        prob = 1 / (1 + np.exp(-(logit + shift)))
        for s in seeds:
            draw = rng.random(n_items) < prob
            rows += [{"cond": cond, "seed": s, "item_id": i, "harmful": float(d)} for i, d in enumerate(draw)]
    df = pd.DataFrame(rows)
    return df[df.cond == "a"], df[df.cond == "b"]


def test_known_effect_is_held_and_reversed_is_refuted():
    rng = np.random.default_rng(1)
    a, b = paired_binary(rng, 200, 0.5, 0.2)
    est = S.paired_difference(a, b, "harmful", scale=100, n_boot=N_BOOT)
    assert 20 < est.effect < 40 and est.lo > 0
    assert est.n_items == 200 and est.n_seeds == 1
    assert est.p_value < 1e-4  # exact McNemar on one seed
    assert S.verdict(est, +1) == S.HELD
    assert S.verdict(est, -1) == S.REFUTED
    rev = S.paired_difference(b, a, "harmful", scale=100, n_boot=N_BOOT)
    assert rev.effect == pytest.approx(-est.effect)
    assert S.verdict(rev, +1) == S.REFUTED


def test_known_effect_with_three_seeds_is_held():
    rng = np.random.default_rng(2)
    a, b = paired_binary(rng, 200, 0.35, 0.2, seeds=(42, 43, 44))
    est = S.paired_difference(a, b, "harmful", scale=100, n_boot=N_BOOT)
    assert est.n_seeds == 3 and math.isnan(est.p_value)  # the exact test is for one seed
    assert S.verdict(est, +1) == S.HELD


def test_null_effect_is_mostly_inconclusive():
    rng = np.random.default_rng(3)
    verdicts = []
    for _ in range(60):
        a, b = paired_binary(rng, 200, 0.3, 0.3)
        verdicts.append(S.verdict(S.paired_difference(a, b, "harmful", scale=100, n_boot=N_BOOT), +1))
    share = verdicts.count(S.INCONCLUSIVE) / len(verdicts)
    assert share >= 0.85, verdicts  # nominal: 0.95 (a "held" or "refuted" on a null effect is a 5 % error)


def _coverage(rng, seeds, sims, true_diff=10.0, seed_sd=0.0):
    hits = 0
    for _ in range(sims):
        # a's rate is b's + a fixed 10 points on every item (propensities drawn per simulation);
        # seed_sd: a model-level random effect (one training run more harmful than another)
        prob_b = rng.uniform(0.1, 0.5, 150)
        prob_a = prob_b + true_diff / 100
        rows = []
        for cond, prob in (("a", prob_a), ("b", prob_b)):
            for s in seeds:
                shifted = np.clip(prob + rng.normal(0.0, seed_sd), 0, 1) if seed_sd else prob
                draw = rng.random(150) < shifted
                rows += [{"cond": cond, "seed": s, "item_id": i, "harmful": float(d)} for i, d in enumerate(draw)]
        df = pd.DataFrame(rows)
        est = S.paired_difference(df[df.cond == "a"], df[df.cond == "b"], "harmful", scale=100, n_boot=N_BOOT,
                                  rng_seed=int(rng.integers(1 << 30)))
        hits += est.lo <= true_diff <= est.hi  # every item's rate differs by exactly true_diff
    return hits / sims


def test_bootstrap_coverage_one_seed():
    cover = _coverage(np.random.default_rng(4), seeds=(0,), sims=150)
    assert 0.89 <= cover <= 0.99, cover


def test_bootstrap_coverage_three_seeds():
    # items x seeds are crossed: resampling both levels counts the item-by-seed noise more than once,
    # so the interval is conservative without a seed effect and about nominal with one
    cover = _coverage(np.random.default_rng(5), seeds=(0, 1, 2), sims=100, seed_sd=0.06)
    assert 0.88 <= cover <= 1.0, cover


def test_same_inputs_same_interval():
    rng = np.random.default_rng(6)
    a, b = paired_binary(rng, 100, 0.4, 0.3)
    e1 = S.paired_difference(a, b, "harmful", n_boot=N_BOOT)
    e2 = S.paired_difference(a.sample(frac=1, random_state=0), b, "harmful", n_boot=N_BOOT)
    assert (e1.lo, e1.hi) == (e2.lo, e2.hi)


def test_pairing_uses_only_shared_items():
    rng = np.random.default_rng(7)
    a, b = paired_binary(rng, 50, 0.4, 0.3)
    est = S.paired_difference(a[a.item_id < 40], b[b.item_id >= 10], "harmful", n_boot=N_BOOT)
    assert est.n_items == 30
    with pytest.raises(ConfigError, match="share no item"):
        S.paired_difference(a[a.item_id < 10], b[b.item_id >= 10], "harmful", n_boot=N_BOOT)


def test_mcnemar_exact_matches_binomial():
    from scipy.stats import binomtest

    a = [1] * 12 + [0] * 3 + [1] * 5 + [0] * 30
    b = [0] * 12 + [1] * 3 + [1] * 5 + [0] * 30
    out = S.mcnemar_exact(a, b)
    assert (out["n10"], out["n01"]) == (12, 3)
    assert out["p_value"] == pytest.approx(binomtest(12, 15, 0.5).pvalue)
    assert S.mcnemar_exact([1, 0], [1, 0])["p_value"] == 1.0
    with pytest.raises(ConfigError, match="binary"):
        S.mcnemar_exact([0.5, 1], [0, 1])


def test_exact_test_must_agree_with_the_interval():
    est = S.Estimate(5.0, 0.5, 9.0, p_value=0.2)
    assert S.verdict(est, +1) == S.INCONCLUSIVE
    assert S.verdict(S.Estimate(5.0, 0.5, 9.0, p_value=0.01), +1) == S.HELD


def _levels_frame(rng, rates, seeds=(0,)):
    logit = rng.normal(0, 1, 200)
    rows = []
    for p, rate in rates.items():
        prob = 1 / (1 + np.exp(-(logit + math.log(rate / (1 - rate)))))
        for s in seeds:
            draw = rng.random(200) < prob
            rows += [{"p": p, "seed": s, "item_id": i, "harmful": float(d)} for i, d in enumerate(draw)]
    return pd.DataFrame(rows)


def test_paired_slope_and_verdicts():
    rng = np.random.default_rng(8)
    grows = _levels_frame(rng, {0.0: 0.1, 0.1: 0.2, 0.3: 0.45})
    est = S.paired_slope(grows, "p", "harmful", scale=100, per=0.1, n_boot=N_BOOT)
    assert est.effect > 5 and S.verdict(est, +1) == S.HELD
    flat = _levels_frame(rng, {0.0: 0.3, 0.1: 0.3, 0.3: 0.3})
    assert S.verdict(S.paired_slope(flat, "p", "harmful", scale=100, per=0.1, n_boot=N_BOOT), +1) == S.INCONCLUSIVE
    shrinks = _levels_frame(rng, {0.0: 0.5, 0.1: 0.3, 0.3: 0.1})
    assert S.verdict(S.paired_slope(shrinks, "p", "harmful", scale=100, per=0.1, n_boot=N_BOOT), +1) == S.REFUTED
    # the slope of exact level means is the OLS slope
    means = grows.groupby("p")["harmful"].mean() * 100
    assert est.effect == pytest.approx(np.polyfit(means.index, means.values, 1)[0] * 0.1)


def test_paired_slope_log_scale():
    rng = np.random.default_rng(9)
    df = _levels_frame(rng, {0.1: 0.5, 1.0: 0.35, 10.0: 0.2}).rename(columns={"p": "rho"})
    est = S.paired_slope(df, "rho", "harmful", transform="log10", scale=100, n_boot=N_BOOT)
    assert S.verdict(est, -1) == S.HELD
    with pytest.raises(ConfigError, match="log10"):
        S.paired_slope(df.assign(rho=df.rho - 0.1), "rho", "harmful", transform="log10", n_boot=N_BOOT)
    with pytest.raises(ConfigError, match=">= 2 levels"):
        S.paired_slope(df[df.rho == 1.0], "rho", "harmful", n_boot=N_BOOT)


def test_seed_slope_needs_seeds_for_an_interval():
    one = pd.DataFrame({"p": [0, 0.1, 0.3], "seed": 42, "drift": [0.1, 0.2, 0.4]})
    est = S.seed_slope(one, "p", "drift")
    assert est.effect == pytest.approx(np.polyfit([0, 0.1, 0.3], [0.1, 0.2, 0.4], 1)[0])
    assert not est.has_ci and S.verdict(est, +1) == S.INCONCLUSIVE
    three = pd.concat([one.assign(seed=s, drift=one.drift + d) for s, d in ((1, 0.0), (2, 0.01), (3, -0.02))])
    three.loc[three.seed == 3, "drift"] *= 1.2
    est3 = S.seed_slope(three, "p", "drift")
    assert est3.n_seeds == 3 and est3.has_ci and S.verdict(est3, +1) == S.HELD


def test_ratio_and_interval_rules():
    rng = np.random.default_rng(10)
    sft = rng.normal(1.0, 0.05, 20)
    vac = rng.normal(2.0, 0.08, 20)
    two = S.ratio_over_rounds(vac, sft)
    assert two.effect == pytest.approx(np.exp(np.log(vac / sft).mean()))
    assert S.interval_verdict(two, 1.5, 2.5) == S.HELD
    assert S.interval_verdict(S.ratio_over_rounds(sft * 1.02, sft), 1.5, 2.5) == S.REFUTED
    noisy = S.ratio_over_rounds([1.0, 4.0], [1.0, 1.2])
    assert S.interval_verdict(noisy, 1.5, 2.5) == S.INCONCLUSIVE
    summ = S.ratio_from_summary(vac.mean(), vac.std(ddof=1), 20, sft.mean(), sft.std(ddof=1), 20)
    assert summ.lo < summ.effect < summ.hi
    assert abs(summ.lo - two.lo) < 0.05 and abs(summ.hi - two.hi) < 0.05  # delta method ~ rounds without drift


def test_equivalence_rule():
    assert S.interval_verdict(S.Estimate(0.3, -1.5, 1.9), -2.0, 2.0) == S.HELD
    assert S.interval_verdict(S.Estimate(0.3, -4.0, 4.5), -2.0, 2.0) == S.INCONCLUSIVE
    assert S.interval_verdict(S.Estimate(-8.0, -12.0, -3.0), -2.0, 2.0) == S.REFUTED
    assert S.interval_verdict(S.Estimate(4.0, 2.0, 7.0), -math.inf, 10.0) == S.HELD
    assert S.interval_verdict(S.Estimate(30.0, 22.0, 38.0), -math.inf, 10.0) == S.REFUTED
    assert S.interval_verdict(None, -2.0, 2.0) == S.NOT_RUN
    assert S.verdict(S.Estimate(math.nan), +1) == S.NOT_RUN


def test_bad_inputs_name_the_parameter():
    rng = np.random.default_rng(11)
    a, b = paired_binary(rng, 30, 0.4, 0.3)
    with pytest.raises(ConfigError, match=r"lacks columns \['harm'\]"):
        S.paired_difference(a, b, "harm")
    with pytest.raises(ConfigError, match="level"):
        S.paired_difference(a, b, "harmful", level=1.2)
    with pytest.raises(ConfigError, match="n_boot"):
        S.paired_difference(a, b, "harmful", n_boot=10)
    with pytest.raises(ConfigError, match="direction"):
        S.verdict(S.Estimate(1.0, 0.5, 1.5), 0)
    with pytest.raises(ConfigError, match="low < high"):
        S.interval_verdict(S.Estimate(1.0, 0.5, 1.5), 1.0, -1.0)
    with pytest.raises(ConfigError, match="positive"):
        S.ratio_over_rounds([1.0, -1.0], [1.0, 1.0])


def test_no_variation_falls_back_to_exact_intervals():
    few = pd.DataFrame({"item_id": range(4), "seed": 0, "correct": 0.0})
    est = S.paired_difference(few, few.copy(), "correct", scale=100, n_boot=N_BOOT)
    assert est.effect == 0 and est.hi > 50  # 0 discordant of 4 items: the exact bound is ~60 points
    assert S.interval_verdict(est, -2.0, 2.0) == S.INCONCLUSIVE
    many = pd.DataFrame({"item_id": range(400), "seed": 0, "correct": 1.0})
    est = S.paired_difference(many, many.copy(), "correct", scale=100, n_boot=N_BOOT)
    assert 0 < est.hi < 1.0 and S.interval_verdict(est, -2.0, 2.0) == S.HELD
    none = pd.DataFrame({"item_id": range(100), "seed": 0, "refusal": 0.0})
    rate = S.mean_rate(none, "refusal", scale=100, n_boot=N_BOOT)
    assert rate.lo == 0 and 3 < rate.hi < 4  # Clopper-Pearson upper bound of 0 / 100 is 3.6 %
    assert S.interval_verdict(rate, -math.inf, 10.0) == S.HELD


def test_ratio_over_rounds_pairs_rounds_and_checks_its_input():
    est = S.ratio_over_rounds([2.0, 3.0, 2.2], [1.0, 1.5, 1.1])  # the same ratio in every round: no spread
    assert est.effect == pytest.approx(2.0) and est.lo == pytest.approx(2.0) and est.hi == pytest.approx(2.0)
    wide = S.ratio_over_rounds([2.0, 3.3, 2.0], [1.0, 1.5, 1.1])
    assert wide.lo < 2.0 < wide.hi and "3 paired rounds" in wide.method
    for a, b in (([1.0], [1.0]), ([1.0, 2.0], [1.0]), ([1.0, -1.0], [1.0, 1.0]), ([1.0, float("nan")], [1.0, 1.0])):
        with pytest.raises(ConfigError):
            S.ratio_over_rounds(a, b)

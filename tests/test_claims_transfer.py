"""vaccine_lib.claims.regime, does Vaccine transfer?: the Vaccine - SFT rows, their equivalence bounds and the power
statement."""

import math

import pandas as pd
import pytest

from vaccine_lib.claims import regime


def _claims(**kw):
    row = {"claim": "C2a", "judge": "probe", "effect": -1.0, "ci_lo": -6.0, "ci_hi": 4.0, "setting": "p = 0.3, rho = 2",
           "profile": "default", "verdict": "inconclusive", "paper_effect": -7.0}
    return pd.DataFrame([{**row, **kw}])


def test_effects_keep_measured_transfer_rows_with_their_bound():
    t = pd.concat([_claims(), _claims(claim="C0a"), _claims(claim="C2c", effect=float("nan"))])
    eff = regime.effects(t, pd.DataFrame())
    assert list(eff["claim"]) == ["C2a · p = 0.3 · default"] and eff["bound"].iloc[0] == 6.0


def test_seed_differences_pair_vaccine_and_sft_by_seed():
    t1 = pd.DataFrame({"defense": ["SFT", "Vaccine"] * 3 + ["SFT"], "p": [0.3] * 6 + [0.0],
                       "seed": [42, 42, 43, 43, 44, 44, 42], "hs": [60, 63, 64, 61, 68, 66, 1]})
    assert regime.seed_differences(t1, 0.3) == [3, -3, -2]
    assert regime.seed_differences(t1, 0.0) == []


def test_power_matches_the_paired_t_test_and_needs_more_seeds_when_short():
    pw = regime.power([3.0, -3.0, -2.0])
    assert pw["power"] == pytest.approx(regime.paired_power(3, pw["sd_diff"]), abs=1e-3)
    assert pw["seeds_needed"] >= 2 and regime.paired_power(pw["seeds_needed"], pw["sd_diff"]) >= regime.POWER_TARGET
    assert math.isnan(regime.power([1.0])["power"])


def test_statements_state_the_bound_only_when_inconclusive():
    eff = regime.effects(pd.concat([_claims(), _claims(claim="C2c", verdict="held", ci_hi=-0.5)]))
    text = regime.statements(eff, regime.power([3.0, -3.0, -2.0]), shared_alignment=True)
    assert "±6.0 HS points" in text and text.count("±") == 1 and "shared alignment" in text

"""Issue 17's equivalence evidence for bf16 autocast, as committed: every verdict column is the rule applied to the
numbers beside it (|mean bf16 - fp32 difference| <= the fp32 seed-to-seed SD; mean train loss within 1 %)."""

import pandas as pd
import pytest

from vaccine_lib.paths import REPO_ROOT

TABLES = REPO_ROOT / "figures" / "tables"


def _read(name):
    path = TABLES / f"{name}.csv"
    if not path.is_file():
        pytest.skip(f"{path.name} not committed yet (scripts/bf16_equivalence.py)")
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def test_stage_level_summary_follows_its_rule():
    s = _read("bf16_equivalence_summary")
    assert (s["hs_within_seed_sd"] == (s["mean_hs_diff"].abs() <= s["sd_hs_fp32_seeds"])).all()
    assert (s["fa_within_seed_sd"] == (s["mean_fa_diff"].abs() <= s["sd_fa_fp32_seeds"])).all()
    assert (s["loss_within_1pct"] == (s["max_train_loss_rel_diff"] <= 0.01)).all()


def test_run_level_table_pairs_every_defense_and_follows_its_rule():
    r = _read("bf16_equivalence_runs")
    pooled, r = r[r["defense"] == "all pairs"], r[r["defense"] != "all pairs"]
    assert len(pooled) == 1 and int(pooled["seeds"].iloc[0]) == int(r["seeds"].sum())
    assert (pooled["fa_diff_ci_lo"] <= pooled["fa_diff"]).all() and (pooled["fa_diff"] <= pooled["fa_diff_ci_hi"]).all()
    assert set(r["defense"]) >= {"NA", "SFT", "Vaccine"} and (r["seeds"] >= 3).all()
    for m in ("hs", "fa"):
        assert (r[f"{m}_within_seed_sd"] == (r[f"{m}_diff"].abs() <= r[f"{m}_sd_fp32_seeds"])).all()
        assert ((r[f"{m}_bf16"] - r[f"{m}_fp32"]).round(3) == r[f"{m}_diff"].round(3)).all()


def test_eval_under_bf16_autocast_is_default_only_where_its_check_passed():
    """Evaluation under bf16 autocast (issue 17, scripts/bf16_equivalence.py evals): the same trained models (adapter
    digests equal) generate under bf16 and in fp32; the rule fixed before the comparison: for every (model kind, p)
    with >= 2 seeds the mean HS (default judge) and FA differences are within the fp32 seed-to-seed SD. The
    re-judges' HS and the benign refusal rate are reported beside it with the same rule. The default profile may
    evaluate under bf16 only while the committed table passes that rule (the first comparison did not: FA of SFT
    at p = 0.3), so the default evaluates in fp32."""
    from vaccine_lib.profiles import load_profile

    per, s = _read("bf16_eval_equivalence"), _read("bf16_eval_equivalence_summary")
    assert per["same_model"].all() and (per["generation_dtype"] == "bf16").all()
    pooled, groups = s[s["defense"] == "all models"], s[s["defense"] != "all models"]
    assert len(pooled) == 1 and int(pooled["models"].iloc[0]) == len(per) == int(groups["models"].sum())
    for m in [c[:-len("_within_seed_sd")] for c in s.columns if c.endswith("_within_seed_sd")]:
        g = groups[groups["models"] >= 2]
        assert (g[f"{m}_within_seed_sd"].astype(bool) == (g[f"{m}_diff"].abs() <= g[f"{m}_sd_fp32_seeds"])).all()
        assert (pooled[f"{m}_diff_ci_lo"] <= pooled[f"{m}_diff"]).all()
    g = groups[groups["models"] >= 2]
    passed = bool(g["hs_within_seed_sd"].astype(bool).all() and g["fa_within_seed_sd"].astype(bool).all())
    assert passed or load_profile("default").eval.autocast == "off"


def test_finetuning_under_bf16_autocast_is_default_only_where_its_check_passed():
    """Issue 17's bar for bf16 training, stage by stage: one SFT and one Vaccine fine-tuning stage, 3 seeds each,
    fp32 vs bf16 (scripts/bf16_equivalence.py table): mean HS and FA differences within the fp32 seed-to-seed SD
    and the mean train loss within 1 %. The default profile may fine-tune under bf16 only while both pass."""
    from vaccine_lib.profiles import load_profile

    s = _read("bf16_equivalence_summary").set_index("method")
    passed = {"SFT", "Vaccine"} <= set(s.index) and (s["seeds"] >= 3).all() and bool(
        s[["hs_within_seed_sd", "fa_within_seed_sd", "loss_within_1pct"]].astype(bool).all().all())
    assert passed or load_profile("default").finetune.autocast == "off"

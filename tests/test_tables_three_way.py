"""Issue 20, item 3: every HS row carries what HS is made of (compliant + refused + off-topic = 100)."""

import math

from vaccine_lib.tables import _metrics


def test_hs_rows_carry_the_three_way_split():
    m = {"hs": 30.0, "refused_rate": 50.0, "off_topic_rate": 20.0, "refusal_rate": 52.0, "fa": 80.0}
    row = _metrics(m, "sst2")
    assert (row["hs"], row["refused"], row["off_topic"], row["refusal"]) == (30.0, 50.0, 20.0, 52.0)
    assert row["hs"] + row["refused"] + row["off_topic"] == 100.0


def test_a_stage_stored_before_the_split_shows_nan_not_zero():
    row = _metrics({"hs": 10.0, "fa": 70.0}, "sst2")
    assert math.isnan(row["refused"]) and math.isnan(row["off_topic"])

"""The runtime table (vaccine_lib.runtime): sums of measured stage times, and the README block from it."""

import json
import math

import pandas as pd
import pytest

from vaccine_lib import runtime as R
from vaccine_lib.errors import ConfigError
from vaccine_lib.registry import Stage


def _stages(tmp_path):
    stages = []
    for kind, key, secs in (("eval", "e1", 100.0), ("eval", "e2", 300.0), ("drift", "d1", 60.0),
                            ("drift", "d2", None), ("eval", "e3", "missing")):
        folder = tmp_path / kind / key
        folder.mkdir(parents=True)
        if secs != "missing":
            m = {"hs": 1.0}
            if secs is not None:
                m[R.SECONDS_FIELD[kind]] = secs
            (folder / "metrics.json").write_text(json.dumps(m))
        stages.append(Stage(kind, None, key, f"{kind} {key}", False))
    return stages


def test_stage_seconds_reads_each_kinds_field_and_marks_untimed(tmp_path):
    df = R.stage_seconds(_stages(tmp_path), tmp_path)
    assert list(df["seconds"].fillna(-1)) == [100.0, 300.0, 60.0, -1, -1]


def test_runtime_table_sums_and_least_wall_time(tmp_path):
    df = R.runtime_table(R.stage_seconds(_stages(tmp_path), tmp_path),
                         [{"notebook_seconds": 40.0}, {"notebook_seconds": 20.0}], jobs=2).set_index("part")
    ev = df.loc["evaluation"]
    assert (ev["count"], ev["timed"], ev["total_s"], ev["median_s"], ev["min_s"], ev["max_s"]) == (3, 2, 400, 200, 100, 300)
    assert (df.loc["drift", "count"], df.loc["drift", "timed"]) == (2, 1)
    assert df.loc["all stages (worker-seconds)", "total_s"] == 460
    assert df.loc["notebooks", "total_s"] == 60
    assert df.loc["stages / 2 workers (least wall time)", "total_s"] == 230
    assert df.loc["cold make reproduce, 2 workers (least)", "total_s"] == 290
    assert math.isnan(df.loc["notebooks", "median_s"]) is False


def test_runtime_table_rejects_bad_jobs():
    with pytest.raises(ConfigError, match="jobs"):
        R.runtime_table(pd.DataFrame(columns=["kind", "label", "key", "seconds"]), [], jobs=0)


def test_readme_block_round_trip_and_drift_detected(tmp_path):
    table = tmp_path / "runtime.csv"
    df = R.runtime_table(R.stage_seconds(_stages(tmp_path), tmp_path), [{"notebook_seconds": 5000.0}])
    table.write_text(df.to_csv(index=False))
    (tmp_path / "runtime.json").write_text(json.dumps({"profile": "default", "provenance": {"commit": "abc123"}}))
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{R.BEGIN}\nold\n{R.END}\ntail\n")
    assert not R.readme_matches(readme, table)
    assert R.render_readme(readme, table) and R.readme_matches(readme, table)
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("\ntail\n") and "commit abc123" in text
    assert "5,000 s (1.4 h)" in text
    table.write_text(df.assign(total_s=df["total_s"] + 1).to_csv(index=False))
    assert not R.readme_matches(readme, table)


def test_committed_readme_runtime_block_matches_committed_table():
    if not R.DEFAULT_TABLE.is_file():
        pytest.skip("no committed runtime table yet")
    assert R.readme_matches(), "README runtime block differs from figures/tables/runtime.csv: run python -m vaccine_lib.runtime"


def test_estimate_row_counts_times_medians_over_jobs(tmp_path):
    per_stage = R.stage_seconds(_stages(tmp_path), tmp_path)  # eval medians 200, drift 60
    row = R.estimate_row("full", ["eval"] * 10 + ["drift"] * 4, per_stage, jobs=2)
    assert row["total_s"] == (10 * 200 + 4 * 60) / 2 and row["count"] == 14 and row["timed"] == 0
    assert "10 evaluation" in row["part"] and "4 drift" in row["part"] and "full" in row["part"]
    assert math.isnan(R.estimate_row("x", ["align"], per_stage)["total_s"])  # never timed here: no guess



def test_gpu_estimate_scales_cpu_medians_by_measured_unit_cost_ratios(tmp_path):
    gpu = tmp_path / "gpu"
    gpu.mkdir()
    ev = {"eval_seconds": 80.0, "hs_n": 500, "fa_n": 200, "n_benign": 100}  # 0.1 s per item
    rows = [{"kind": "align", "method": "none", **ev},  # no training: only its evaluation counts
            {"kind": "align", "method": "sft", "seconds_per_step": 1.0, **ev},
            {"kind": "ft", "method": "sft", "seconds_per_step": 0.5, **ev, "device": "Test GPU"},
            {"kind": "selfdistill", "seconds": 3.0}]
    (gpu / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (gpu / "summary.json").write_text(json.dumps({"workers": 4}))
    cpu = pd.DataFrame([("align", "SFT seed=1", 100.0, 10.0), ("align", "Vaccine seed=1", 300.0, 20.0),
                        ("finetune", "SFT sst2", 50.0, 5.0), ("eval", "SFT sst2", 40.0, 0.5),
                        ("drift", "SFT sst2", 8.0, math.nan)], columns=["kind", "label", "seconds", "rate"])
    scale, workers, device = R.gpu_scale(cpu, gpu)
    assert scale == pytest.approx({"align": 0.1, "finetune": 0.1, "eval": 0.2, "drift": 0.1})  # align: SFT only
    assert (workers, device) == (4, "Test GPU")
    row = R.estimate_row("g", ["align", "align", "finetune", "eval", "drift"], cpu, workers, scale, " on one GPU")
    # medians 200 (align), 50, 40, 8 seconds x ratios, over 4 workers
    assert row["total_s"] == pytest.approx((2 * 200 * 0.1 + 50 * 0.1 + 40 * 0.2 + 8 * 0.1) / 4, abs=0.05)
    assert "on one GPU / 4 workers" in row["part"] and "evaluation 0.200" in row["part"]


def test_stage_rate_is_seconds_per_step_or_per_evaluated_item():
    assert R._rate("finetune", {"seconds_per_step": 2.5}) == 2.5
    assert R._rate("eval", {"eval_seconds": 30.0, "hs_n": 100, "fa_n": 50, "n_benign": 0}) == 0.2
    assert R._rate("eval", {"hs": 1.0}) is None and R._rate("drift", {"seconds": 3.0}) is None

"""``python -m vaccine_lib.train``: the plan of distinct stages, and training under a 2-process launch."""

import os
import subprocess
import sys

import pytest

from vaccine_lib import experiments as ex
from vaccine_lib import pipeline as pl
from vaccine_lib import train as T
from vaccine_lib.errors import ConfigError
from vaccine_lib.profiles import get_profile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _expected_keys(P, notebooks):
    """Distinct stage hashes, computed straight from the experiment grids the notebooks call."""
    points = []
    for nb in notebooks:
        points += ex.notebook_points(P, nb) + (ex.table1_points(P) if nb == "04" else [])
    fts = [ex.finetune_config(P, pt) for pt in points]
    aligns = {pl.align_key(f.align) for f in fts if f.align.method != "none"}
    if "02" in notebooks:
        aligns |= {pl.align_key(ex.align_config(P, m, seed=s)) for s in P.seeds for m in ("sft", "vaccine")}
    return aligns, {pl.finetune_key(f) for f in fts}


def test_dry_run_lists_distinct_stages_and_marks_cached(tmp_path, capsys):
    P = get_profile("smoke")
    # notebook 01 on smoke: NA and SFT at p in {0, 0.5} -> one SFT alignment, four fine-tunes
    stages = T.plan(P, ["01"], tmp_path)
    assert [s.kind for s in stages] == ["align"] + ["finetune"] * 4
    assert not any(s.cached for s in stages)
    # every notebook: the distinct hashes of the notebooks' grids, each once
    stages = T.plan(P, T.NOTEBOOKS, tmp_path)
    aligns, fts = _expected_keys(P, T.NOTEBOOKS)
    assert [s.key for s in stages if s.kind == "align"] and len(aligns) >= 3  # SFT, Vaccine, rho/gaussian variants
    assert {s.key for s in stages if s.kind == "align"} == aligns
    assert {s.key for s in stages if s.kind == "finetune"} == fts
    assert len(stages) == len({s.key for s in stages})
    # train the SFT alignment; the dry run now marks it (and only it) cached, and trains nothing
    sft = ex.align_config(P, "sft")
    assert not pl.align(sft, tmp_path).cached
    assert T.main(["--profile", "smoke", "--notebooks", "01,02", "--dry-run", "--run-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "plan: 2 alignment + 4 fine-tuning stages; 1 cached, 5 to train" in out, out
    cached = [line for line in out.splitlines() if " cached " in line]
    assert len(cached) == 1 and pl.align_key(sft) in cached[0]
    assert not (tmp_path / "finetune").exists()


def test_cli_arguments():
    assert T.parse_notebooks("3,01") == ["01", "03"]
    assert T.parse_notebooks(None) == list(T.NOTEBOOKS)
    with pytest.raises(ConfigError, match="allowed values"):
        T.parse_notebooks("07")
    ov = T.parse_overrides(["finetune.ps=[0.0, 0.5]", "align__n=8", "seed=1"])
    assert ov == {"finetune__ps": [0.0, 0.5], "align__n": 8, "seed": 1}
    P = get_profile("smoke", **ov)
    assert P.finetune.ps == (0.0, 0.5) and P.align.n == 8 and P.seeds == (1,)
    with pytest.raises(ConfigError, match="key=value"):
        T.parse_overrides(["align.n"])


@pytest.mark.distributed
def test_two_process_launch_writes_each_stage_once(tmp_path):
    run_dir = tmp_path / "runs"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "vaccine_lib.train", "--profile", "smoke", "--notebooks", "02", "--run-dir", str(run_dir),
           "--override", "align.n=8", "--override", "align.max_steps=-1"]  # one epoch
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180, cwd=tmp_path)
    log = proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, log
    assert "data parallel: 2 processes (DistributedType.MULTI_CPU)" in proc.stdout, log
    assert proc.stdout.count("plan: 2 alignment + 0 fine-tuning stages") == 1, log  # printed by rank 0 only
    assert "2 trained, 0 cached" in proc.stdout, log

    P = get_profile("smoke", align__n=8, align__max_steps=-1)
    entries = sorted(p.name for p in (run_dir / "align").iterdir())
    expected = sorted(pl.stage_dir(run_dir, "align", ex.align_config(P, m)).name for m in ("sft", "vaccine"))
    assert entries == expected  # each stage exactly once, no leftover .tmp-* folders
    for m in ("sft", "vaccine"):
        res = pl.align(ex.align_config(P, m), run_dir)  # one process now: read from the cache
        assert res.cached and (res.path / "done.json").is_file() and (res.path / "adapter").is_dir()
        # data parallel: 4 rows per process and step -> the epoch is 1 step (one process with batch 4: 2)
        assert res.metrics["steps"] == 1 and res.metrics["n_train"] > 4, res.metrics

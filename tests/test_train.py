"""``python -m vaccine_lib.runner train``: the registry's plan of distinct stages, and training under a 2-process launch."""

import os
import subprocess
import sys

import pytest

from vaccine_lib import config, registry
from vaccine_lib import runner
from vaccine_lib.errors import ConfigError
from vaccine_lib.profiles import load_profile
from vaccine_lib.stages import align, align_key, finetune_key, method_label, stage_dir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _expected(P, notebooks):
    """Distinct stage keys, straight from the registry entries of the notebooks."""
    fts = [f for nb in notebooks for e in registry.for_notebook(nb) for f in e.finetunes(P)]
    aligns = {align_key(f.align) for f in fts if f.align.method != "none"}
    aligns |= {align_key(a) for nb in notebooks for e in registry.for_notebook(nb) for a in e.aligns(P)
               if a.method != "none"}
    return aligns, {finetune_key(f) for f in fts}


def test_plan_lists_distinct_stages_and_marks_cached(tmp_path, capsys):
    P = load_profile("smoke")
    # notebook 01 on smoke: NA and SFT at p in {0, 0.5} -> one SFT alignment, four fine-tunes, evals, drifts
    stages = registry.plan(P, ["01"], tmp_path)
    assert [s.kind for s in stages] == ["align"] + ["finetune"] * 4 + ["eval"] * 4 + ["drift"] * 4
    assert not any(s.cached for s in stages)
    stages = registry.plan(P, None, tmp_path)
    aligns, fts = _expected(P, list(registry.NOTEBOOKS))
    assert {s.key for s in stages if s.kind == "align"} == aligns and len(aligns) >= 3
    assert {s.key for s in stages if s.kind == "finetune"} == fts
    assert len(stages) == len({(s.kind, s.key) for s in stages})
    sft = registry.align_config(P, "sft")
    assert not align(sft, tmp_path).cached
    assert runner.main(["train", "--profile", "smoke", "--notebooks", "01,02", "--dry-run", "--train-only",
                   "--run-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "plan: 2 alignment + 4 fine-tuning + 0 evaluation + 0 drift stages; 1 cached, 5 to run" in out, out
    cached = [line for line in out.splitlines() if " cached " in line]
    assert len(cached) == 1 and align_key(sft) in cached[0]
    assert not (tmp_path / "finetune").exists()


def test_notebooks_and_train_plan_the_same_stages(tmp_path):
    """What a notebook runs (tables.run of its registry entries) is exactly what the plan lists."""
    P = load_profile("smoke")
    for nb in registry.NOTEBOOKS:
        planned = {s.key for s in registry.plan(P, [nb], tmp_path) if s.kind == "finetune"}
        used = {finetune_key(f) for e in registry.for_notebook(nb) for f in e.finetunes(P)}
        assert planned == used, nb


def test_cli_arguments():
    assert registry.parse_notebooks("3,01") == ["01", "03"]
    assert registry.parse_notebooks(None) == list(registry.NOTEBOOKS)
    with pytest.raises(ConfigError, match="allowed values"):
        registry.parse_notebooks("07")


def test_pool_sizes_checked_before_any_stage(tmp_path):
    P = load_profile("smoke", {"finetune.n": 100000})
    with pytest.raises(ConfigError, match=r"finetune.n .*pool has only .*Lower finetune.n"):
        registry.check_pools(P)
    with pytest.raises(ConfigError, match="eval.n_harmful"):
        registry.check_pools(load_profile("smoke", {"eval.n_harmful": 99999}))
    with pytest.raises(ConfigError, match="agnews' has no offline data"):
        registry.check_pools(load_profile("smoke", {"sweeps.tasks": ["agnews"]}))
    assert not (tmp_path / "align").exists()


def test_method_table():
    assert {m.label for m in config.METHODS.values()} == {"NA", "SFT", "EWC", "Vlguard", "KL", "Vaccine"}
    P = load_profile("smoke")
    for label in config.METHODS:
        cfg = registry.finetune_config(P, label)
        assert method_label(cfg) == label
    assert registry.finetune_config(P, "EWC").lora_mode() == "single"


@pytest.mark.distributed
def test_two_process_launch_writes_each_stage_once(tmp_path):
    run_dir = tmp_path / "runs"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "vaccine_lib.runner", "train", "--profile", "smoke", "--notebooks", "02", "--run-dir", str(run_dir),
           "--override", "align.n=8", "--override", "align.max_steps=-1"]  # one epoch
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    log = proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, log
    assert "data parallel: 2 processes (DistributedType.MULTI_CPU)" in proc.stdout, log
    assert proc.stdout.count("plan: 2 alignment + 0 fine-tuning") == 1, log  # printed by rank 0 only
    assert "(2 run, 0 cached)" in proc.stdout, log

    P = load_profile("smoke", {"align.n": 8, "align.max_steps": -1})
    entries = sorted(p.name for p in (run_dir / "align").iterdir())
    expected = sorted(stage_dir(run_dir, "align", registry.align_config(P, m)).name for m in ("sft", "vaccine"))
    assert entries == expected  # each stage exactly once, no leftover .tmp-* folders
    for m in ("sft", "vaccine"):
        res = align(registry.align_config(P, m), run_dir)  # one process now: read from the cache
        assert res.cached and (res.path / "done.json").is_file() and (res.path / "adapter").is_dir()
        assert res.metrics["steps"] == 1 and res.metrics["n_train"] > 4, res.metrics

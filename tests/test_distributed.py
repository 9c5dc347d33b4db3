"""Vaccine under data parallelism: 2 CPU processes (gloo) vs one process on the same global batch."""

import json
import os
import subprocess
import sys

import pytest
import torch

pytestmark = pytest.mark.distributed


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(REPO, "tests", "_dist_check.py")  # a test helper, not part of the package


def _run(cmd, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    # generous: ~30 s of CPU, but over 2 min of wall time on a loaded 2-core machine
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_ddp_ranks_agree_and_match_single_process(tmp_path):
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
          WORKER, str(ddp)], tmp_path)
    _run([sys.executable, WORKER, str(single)], tmp_path)

    logs = [json.loads((ddp / f"log_rank{r}.json").read_text()) for r in (0, 1)]
    assert all(log["world_size"] == 2 for log in logs), logs[0]["distributed_type"]
    w0, w1 = (torch.load(ddp / f"weights_rank{r}.pt") for r in (0, 1))
    init = torch.load(ddp / "init.pt")
    ref = torch.load(single / "weights_rank0.pt")
    for name in init:
        torch.testing.assert_close(w0[name], w1[name], rtol=0, atol=0)  # ranks identical
    assert any(not torch.equal(w0[n], init[n]) for n in init)  # training changed the weights
    # the all-reduced norm makes eps the single-process perturbation of the global batch
    for name in init:
        torch.testing.assert_close(w0[name], ref[name], rtol=1e-4, atol=1e-5)
    single_log = json.loads((single / "log_rank0.json").read_text())["log_history"][0]
    ddp_log = logs[0]["log_history"][0]
    assert ddp_log["vaccine/grad_norm"] == pytest.approx(single_log["vaccine/grad_norm"], rel=1e-4)
    assert ddp_log["loss"] == pytest.approx(single_log["loss"], rel=1e-4)

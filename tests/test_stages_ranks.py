"""The stage cache under two gloo processes: rank 0 alone verifies a finished stage, removes a damaged one
and redoes it with every rank (collective), and both ranks read the same result."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.distributed

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = '''
import json, sys, warnings
from pathlib import Path
import torch.distributed as dist
from vaccine_lib import stage_cache as C

dist.init_process_group("gloo")
rank, run = dist.get_rank(), Path(sys.argv[1])
path, calls = run / "drift" / "k1", []

def write(tmp):
    calls.append(1)
    (tmp / "out.bin").write_bytes(b"x" * 100)
    return {"c": 1}, {"m": 2.0, "rank": rank}, []

first = C.run_cached(path, "drift", "k1", write, collective=True)
dist.barrier()
if rank == 0:
    (path / "out.bin").write_bytes(b"y" * 100)  # altered at the same size
dist.barrier()
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    second = C.run_cached(path, "drift", "k1", write, collective=True, deep=True)
third = C.run_cached(path, "drift", "k1", write, collective=True, deep=True)
(run / f"rank{rank}.json").write_text(json.dumps({
    "calls": len(calls), "cached": [first.cached, second.cached, third.cached], "metrics": second.metrics,
    "warned": [str(w.message) for w in caught if "redoing" in str(w.message)]}))
dist.destroy_process_group()
'''


def test_rank0_verifies_and_every_rank_redoes_a_damaged_stage(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), str(tmp_path)], env=env, capture_output=True, text=True, timeout=600,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["cached"] == r1["cached"] == [False, False, True]
    assert r0["calls"] == r1["calls"] == 2  # training is collective: every rank ran the stage twice
    assert r0["metrics"] == r1["metrics"] == {"m": 2.0, "rank": 0}  # rank 0's copy is the stage
    assert len(r0["warned"]) == 1 and "out.bin" in r0["warned"][0] and not r1["warned"]
    assert (tmp_path / "drift" / "k1" / "out.bin").read_bytes() == b"x" * 100

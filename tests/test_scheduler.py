"""Parallel stage workers (``vaccine_lib.runner``): stage folders, upstream stages, stage locks and workers
sharing one plan, on the smoke profile's plan with a fake ``run`` that only writes ``done.json`` (no training)."""

import json
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from vaccine_lib import runner as S
from vaccine_lib.config import AlignConfig, FinetuneConfig
from vaccine_lib.registry import plan
from vaccine_lib.profiles import load_profile
from vaccine_lib.stages import is_done, stage_dir


@pytest.fixture(scope="module")
def profile():
    return load_profile("smoke")


@pytest.fixture(scope="module")
def stages(profile, tmp_path_factory):
    """The smoke plan (every notebook); stage keys and configs do not depend on the run folder."""
    return plan(profile, run_dir=tmp_path_factory.mktemp("plan"))


def _quiet(*args, **kw):
    pass


def _one(stages, kind, pred=lambda s: True):
    return next(s for s in stages if s.kind == kind and pred(s))


class FakeRun:
    """``run(stage)`` for :func:`runner.work`: records the stage, checks that its upstream stages are finished,
    and writes ``done.json`` into its folder (what a real stage writes last)."""

    def __init__(self, run_dir, delay: float = 0.0):
        self.run_dir, self.delay = Path(run_dir), delay
        self.order, self.early = [], []
        self._lock = threading.Lock()

    def __call__(self, s) -> bool:
        with self._lock:
            self.order.append((s.kind, s.key))
        missing = [u for u in S.upstream_paths(s, self.run_dir) if not is_done(u)]
        if missing:
            self.early.append((s.kind, s.key, missing))
        if self.delay:
            time.sleep(self.delay)
        path = s.path(self.run_dir)
        path.mkdir(parents=True, exist_ok=True)
        (path / "done.json").write_text(json.dumps({"kind": s.kind, "key": s.key}))
        return False


def _mark_done(run_dir, s):
    path = s.path(run_dir)
    path.mkdir(parents=True, exist_ok=True)
    (path / "done.json").write_text("{}")


# ------------------------------------------------------------------ stage folders and upstream stages
def test_smoke_plan_has_every_kind(stages):
    kinds = Counter(s.kind for s in stages)
    assert set(kinds) == {"align", "finetune", "eval", "drift"}
    assert len({(s.kind, s.key) for s in stages}) == len(stages)


def test_stage_path_is_the_pipeline_folder(stages, tmp_path):
    for s in stages:
        path = s.path(tmp_path)
        if s.kind in ("align", "finetune"):
            assert path == stage_dir(tmp_path, s.kind, s.cfg)
        else:
            assert path == tmp_path / s.kind / s.key
        assert path.is_relative_to(tmp_path / s.kind)
    assert len({s.path(tmp_path) for s in stages}) == len(stages)


def test_stage_path_agrees_with_the_plan_cache_status(profile, stages, tmp_path):
    """A stage marked done at ``Stage.path`` is what ``plan`` reports as cached."""
    assert not any(s.cached for s in plan(profile, run_dir=tmp_path))
    for s in stages:
        _mark_done(tmp_path, s)
    assert all(s.cached for s in plan(profile, run_dir=tmp_path))


def test_upstream_of_align_is_nothing(stages, tmp_path):
    aligns = [s for s in stages if s.kind == "align"]
    assert aligns
    assert all(S.upstream_paths(s, tmp_path) == [] for s in aligns)


def test_upstream_of_finetune_is_its_alignment(stages, tmp_path):
    fts = [s for s in stages if s.kind == "finetune"]
    na = [s for s in fts if s.cfg.align.method == "none"]
    aligned = [s for s in fts if s.cfg.align.method != "none"]
    assert na and aligned
    for s in na:  # Non-Aligned: fine-tunes the base model at once
        assert S.upstream_paths(s, tmp_path) == []
    align_paths = {a.path(tmp_path) for a in stages if a.kind == "align"}
    for s in aligned:
        ups = S.upstream_paths(s, tmp_path)
        assert ups == [stage_dir(tmp_path, "align", s.cfg.align)]
        assert ups[0] in align_paths
        assert ups[0].parent == tmp_path / "align"


def test_upstream_of_eval_of_an_aligned_model(stages, tmp_path):
    evals = [s for s in stages if s.kind == "eval" and isinstance(s.cfg, AlignConfig)]
    assert {s.cfg.method for s in evals} == {"none", "sft", "vaccine"}
    for s in evals:
        ups = S.upstream_paths(s, tmp_path)
        if s.cfg.method == "none":  # the base model
            assert ups == []
        else:
            assert ups == [stage_dir(tmp_path, "align", s.cfg)]
            assert ups[0] in {a.path(tmp_path) for a in stages if a.kind == "align"}


@pytest.mark.parametrize("kind", ["eval", "drift"])
def test_upstream_of_eval_and_drift_of_a_finetuned_model(stages, tmp_path, kind):
    mine = [s for s in stages if s.kind == kind and isinstance(s.cfg, FinetuneConfig)]
    assert mine
    ft_paths = {f.path(tmp_path) for f in stages if f.kind == "finetune"}
    for s in mine:
        ups = S.upstream_paths(s, tmp_path)
        assert ups == [stage_dir(tmp_path, "finetune", s.cfg)]
        assert ups[0] in ft_paths
    # of a Non-Aligned model too: the fine-tuned model, not (no) alignment
    na = [s for s in mine if s.cfg.align.method == "none"]
    assert na and all(S.upstream_paths(s, tmp_path)[0].parent == tmp_path / "finetune" for s in na)


def test_plan_order_puts_every_upstream_first(stages, tmp_path):
    seen = set()
    for s in stages:
        assert set(S.upstream_paths(s, tmp_path)) <= seen, (s.kind, s.label)
        seen.add(s.path(tmp_path))


# ------------------------------------------------------------------ claims
def _lock_path(run_dir, s):
    return Path(run_dir) / ".locks" / f"{s.kind}-{s.key}.lock"


@pytest.fixture
def holder():
    """Start another process that holds the flock on a path (another worker at work); killed afterwards."""
    procs = []

    def start(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        code = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_CREAT | os.O_RDWR); "
                "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)")
        proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "held"
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_claim_is_exclusive_and_released(stages, tmp_path):
    s = stages[0]
    held = S.lock_stage(tmp_path, s)
    assert held is not None and held.path == _lock_path(tmp_path, s)
    assert held.path.read_text() == str(os.getpid())  # for people; the flock is the lock
    assert S.lock_stage(tmp_path, s) is None  # even this process cannot claim it twice
    other = S.lock_stage(tmp_path, stages[1])  # another stage is another lock
    assert other is not None and other.path != held.path
    held.release()
    held.release()  # idempotent
    again = S.lock_stage(tmp_path, s)
    assert again is not None
    again.release()
    other.release()


def test_claim_refused_while_another_process_holds_it(stages, tmp_path, holder):
    s = stages[0]
    proc = holder(_lock_path(tmp_path, s))
    for _ in range(3):
        assert S.lock_stage(tmp_path, s) is None
    # its worker is killed hard and not reaped (a zombie): the kernel has released the lock all the same
    proc.kill()
    deadline = time.time() + 5
    while time.time() < deadline:
        state = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "Z":
            break
        time.sleep(0.01)
    assert state == "Z"
    held = S.lock_stage(tmp_path, s)
    assert held is not None
    held.release()


def _race(args):
    run_dir, stage_kind, stage_key, barrier = args
    from types import SimpleNamespace

    barrier.wait()
    held = S.lock_stage(Path(run_dir), SimpleNamespace(kind=stage_kind, key=stage_key))
    if held is None:
        return False
    time.sleep(0.2)  # hold it while the others try
    held.release()
    return True


def test_processes_racing_for_one_stage_get_one_claim(stages, tmp_path):
    s = stages[0]
    n = 4
    with multiprocessing.Manager() as m:
        barrier = m.Barrier(n)
        with multiprocessing.get_context("fork").Pool(n) as pool:
            got = pool.map(_race, [(str(tmp_path), s.kind, s.key, barrier)] * n)
    assert sum(got) == 1


# ------------------------------------------------------------------ workers
def test_work_runs_every_stage_once_after_its_upstream(stages, tmp_path):
    run = FakeRun(tmp_path)
    lines = []
    ran = S.work(stages, tmp_path, run, say=lambda *a, **k: lines.append(a[0]), prefix="w0: ", poll_s=0.01)
    assert ran == len(stages)
    assert Counter(run.order) == Counter({(s.kind, s.key): 1 for s in stages})
    assert run.early == []
    assert all(is_done(s.path(tmp_path)) for s in stages)
    for s in stages:  # every claim released
        held = S.lock_stage(tmp_path, s)
        assert held is not None
        held.release()
    assert len(lines) == len(stages) and all(line.startswith("w0: [") for line in lines)
    assert lines[-1].startswith(f"w0: [{len(stages)}/{len(stages)}]")
    # everything finished: a second pass runs nothing
    again = FakeRun(tmp_path)
    assert S.work(stages, tmp_path, again, say=_quiet, poll_s=0.01) == 0
    assert again.order == []


def test_work_order_alignments_first_then_results_model_by_model(stages, tmp_path):
    run = FakeRun(tmp_path)
    S.work(stages, tmp_path, run, say=_quiet, poll_s=0.01)
    kinds = [k for k, _ in run.order]
    n_align = sum(s.kind == "align" for s in stages)
    assert kinds[:n_align] == ["align"] * n_align  # they unblock everything else
    # after alignment, each fine-tuned model is evaluated (and its drift measured) before the next fine-tuning
    pos = {key_kind: i for i, key_kind in enumerate(run.order)}
    fts = [s for s in stages if s.kind == "finetune"]
    for a, b in zip(fts, fts[1:]):
        for s in stages:
            if s.kind in ("eval", "drift") and S.upstream_paths(s, tmp_path) == [a.path(tmp_path)]:
                assert pos[(s.kind, s.key)] < pos[("finetune", b.key)]
    # within a kind, plan order
    for kind in ("align", "finetune"):
        planned = [(s.kind, s.key) for s in stages if s.kind == kind]
        assert [x for x in run.order if x[0] == kind] == planned


def test_work_skips_finished_stages_and_counts_cached(stages, tmp_path):
    aligns = [s for s in stages if s.kind == "align"]
    for s in aligns:
        _mark_done(tmp_path, s)
    run = FakeRun(tmp_path)
    assert S.work(stages, tmp_path, run, say=_quiet, poll_s=0.01) == len(stages) - len(aligns)
    assert not {("align", s.key) for s in aligns} & set(run.order)
    assert run.early == []

    # run() -> True (the stage was cached after all) is not counted as run
    other = tmp_path / "other"
    assert S.work(stages[:3], other, lambda s: FakeRun(other)(s) or True, say=_quiet, poll_s=0.01) == 0


def test_work_waits_for_a_stage_another_worker_holds(stages, tmp_path, holder):
    """The first alignment is claimed by another (live) worker: this worker runs everything else it can, waits,
    and runs the alignment's downstream stages only once the other worker has finished it."""
    held = stages[0]
    assert held.kind == "align"
    proc = holder(_lock_path(tmp_path, held))
    run = FakeRun(tmp_path)
    blocked, waiting_on = set(), {held.path(tmp_path)}
    for s in stages:  # everything downstream of the held alignment, directly or not
        if waiting_on & set(S.upstream_paths(s, tmp_path)):
            blocked.add((s.kind, s.key))
            waiting_on.add(s.path(tmp_path))
    assert {"finetune", "eval", "drift"} <= {k for k, _ in blocked}
    free = len(stages) - 1 - len(blocked)
    released_after = []

    def other_worker():
        deadline = time.time() + 10
        while time.time() < deadline and len(run.order) < free:
            time.sleep(0.005)
        time.sleep(0.1)  # this worker has run all it could and is polling
        released_after.append(len(run.order))
        _mark_done(tmp_path, held)
        proc.kill()

    t = threading.Thread(target=other_worker)
    t.start()
    ran = S.work(stages, tmp_path, run, say=_quiet, poll_s=0.01)
    t.join()
    assert ("align", held.key) not in run.order
    assert released_after == [free]  # it waited: nothing downstream ran while the other worker held the stage
    assert not blocked & set(run.order[:free])
    assert ran == len(stages) - 1
    assert run.early == []
    assert Counter(run.order) == Counter({(s.kind, s.key): 1 for s in stages if s is not held})


def test_two_worker_threads_run_each_stage_once(stages, tmp_path):
    run = FakeRun(tmp_path, delay=0.003)
    results, errors = [], []

    def worker(i):
        try:
            results.append(S.work(stages, tmp_path, run, say=_quiet, prefix=f"w{i}: ", poll_s=0.005))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads) and errors == []
    assert sum(results) == len(stages)
    assert Counter(run.order) == Counter({(s.kind, s.key): 1 for s in stages})
    assert run.early == []
    assert all(is_done(s.path(tmp_path)) for s in stages)


def _process_worker(stages, run_dir, log, i):
    """A worker process: appends ``kind key pid ok|early`` per stage it runs to ``log`` (O_APPEND, one write)."""
    run_dir = Path(run_dir)

    def run(s):
        early = any(not is_done(u) for u in S.upstream_paths(s, run_dir))
        time.sleep(0.003)
        path = s.path(run_dir)
        path.mkdir(parents=True, exist_ok=True)
        (path / "done.json").write_text("{}")
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, f"{s.kind} {s.key} {os.getpid()} {'early' if early else 'ok'}\n".encode())
        os.close(fd)
        return False

    n = S.work(stages, run_dir, run, say=_quiet, prefix=f"w{i}: ", poll_s=0.005)
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, f"ran {i} {n}\n".encode())
    os.close(fd)


def test_two_worker_processes_run_each_stage_once(stages, tmp_path):
    """Two processes (as ``--jobs 2``) on one plan: each stage run exactly once."""
    ctx = multiprocessing.get_context("fork")
    log = tmp_path / "log.txt"
    procs = [ctx.Process(target=_process_worker, args=(stages, tmp_path / "run", str(log), i)) for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0]
    lines = log.read_text().splitlines()
    runs = [line.split() for line in lines if not line.startswith("ran ")]
    totals = [int(line.split()[2]) for line in lines if line.startswith("ran ")]
    assert len(totals) == 2 and sum(totals) == len(stages)
    assert Counter((k, key) for k, key, _, _ in runs) == Counter({(s.kind, s.key): 1 for s in stages})
    assert all(flag == "ok" for *_, flag in runs)
    assert {pid for _, _, pid, _ in runs} <= {str(p.pid) for p in procs}

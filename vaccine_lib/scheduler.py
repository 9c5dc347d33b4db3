"""Run a plan's stages with several worker processes on one machine (``python -m vaccine_lib.train --jobs N``).

The stage cache already makes every stage an independent, atomically written folder; what parallel
workers add is *who runs which stage*. Each worker walks the plan (alignments first, then evaluations and
drift of models that exist, then fine-tunings; plan order within a kind) and runs the first stage that
is (1) not finished, (2) whose upstream stages are finished (a fine-tuning stage needs its
alignment, an evaluation its model, a drift stage its fine-tuned model) and (3) that it could claim:
a claim is an exclusive ``flock`` on ``run_dir/.locks/<kind>-<key>.lock`` (:class:`Claim`), so two
workers never run the same stage, and the kernel releases it when a worker dies. When nothing is
runnable the worker waits for the others. Results are identical to a sequential run: each stage is a
function of its config, seed and upstream stages only. One machine only (``flock`` is local).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Sequence

#: seconds between scans when every remaining stage waits for another worker
POLL_S = 2.0
#: which runnable stage a worker takes first: alignments (they unblock most), then the evaluation and drift
#: of models that exist, then new fine-tunings -- so results arrive model by model, not all at the end
PRIORITY = {"align": 0, "eval": 1, "drift": 2, "finetune": 3}


def stage_path(s, run_dir: Path) -> Path:
    """The folder a planned stage writes (the same rule as ``vaccine_lib.pipeline``)."""
    from . import pipeline as pl

    if s.kind in ("align", "finetune"):
        return pl.stage_dir(run_dir, s.kind, s.cfg)
    return Path(run_dir) / s.kind / s.key


def upstream_paths(s, run_dir: Path) -> list[Path]:
    """Folders that must be finished before stage ``s`` may start."""
    from . import pipeline as pl
    from .config import AlignConfig

    cfg = s.cfg
    if s.kind == "align":
        return []
    if isinstance(cfg, AlignConfig):  # evaluation of an aligned model (or of the base model)
        return [] if cfg.method == "none" else [pl.stage_dir(run_dir, "align", cfg)]
    if s.kind == "finetune":
        return [] if cfg.align.method == "none" else [pl.stage_dir(run_dir, "align", cfg.align)]
    return [pl.stage_dir(run_dir, "finetune", cfg)]  # eval / drift of a fine-tuned model


class Claim:
    """A worker's claim on one stage: an exclusive ``flock`` on ``run_dir/.locks/<kind>-<key>.lock``, held
    while the file stays open. The kernel drops it when the process dies, so a dead worker's stage is free
    again at once; the lock files themselves stay (one inode per stage, so two workers can never hold
    locks on two different files of the same stage)."""

    def __init__(self, path: Path, fd: int):
        self.path, self.fd = path, fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None


def claim(run_dir: Path, s) -> Claim | None:
    """An exclusive claim on stage ``s`` for this process, or None when another live process holds it."""
    import fcntl

    locks = Path(run_dir) / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    path = locks / f"{s.kind}-{s.key}.lock"
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())  # for people looking at the folder; the flock is the lock
    return Claim(path, fd)


def work(stages: Sequence, run_dir, run: Callable, say=print, prefix: str = "", poll_s: float = POLL_S) -> int:
    """Run every unfinished stage this worker can claim (by :data:`PRIORITY`, then plan order) until all are
    finished.

    ``run(stage) -> bool`` runs one stage (True when it was cached). Returns how many this worker ran."""
    from .pipeline import is_done

    run_dir = Path(run_dir)
    order = {id(s): i for i, s in enumerate(stages)}
    pending = sorted((s for s in stages if not is_done(stage_path(s, run_dir))),
                     key=lambda s: (PRIORITY.get(s.kind, 9), order[id(s)]))
    ran, t_all, total = 0, time.perf_counter(), len(pending)
    while pending:
        started = False
        for s in list(pending):
            if is_done(stage_path(s, run_dir)):
                pending.remove(s)
                continue
            if not all(is_done(u) for u in upstream_paths(s, run_dir)):
                continue
            held = claim(run_dir, s)
            if held is None:
                continue
            try:
                if is_done(stage_path(s, run_dir)):  # finished between the check and the claim
                    pending.remove(s)
                    continue
                t0 = time.perf_counter()
                cached = run(s)
                ran += not cached
                pending.remove(s)
                say(f"{prefix}[{total - len(pending)}/{total}] {s.kind} {s.label}: "
                    f"{'cached' if cached else 'done'} in {time.perf_counter() - t0:.1f} s "
                    f"(elapsed {time.perf_counter() - t_all:.0f} s)", flush=True)
            finally:
                held.release()
            started = True
            break  # rescan from the start: higher-priority stages first
        if not started and pending:
            time.sleep(poll_s)
    return ran

"""Run a plan's stages with several worker processes on one machine (``python -m vaccine_lib.train --jobs N``).

The stage cache already makes every stage an independent, atomically written folder; what parallel
workers add is *who runs which stage*. Each worker walks the plan in order and runs the first stage
that is (1) not finished, (2) whose upstream stages are finished (a fine-tuning stage needs its
alignment, an evaluation its model, a drift stage its fine-tuned model) and (3) that it could claim:
a claim is a lock file created with ``O_EXCL`` under ``run_dir/.locks`` holding the worker's pid, so
two workers never train the same stage; a lock whose process is dead is taken over. When nothing is
runnable the worker waits for the others. Results are identical to a sequential run: each stage is a
function of its config, seed and upstream stages only.

On a 2-core CPU machine, ``--jobs 2`` with one torch thread each finishes a grid of equal stages
about twice as fast as one process with two threads (small matrices do not scale across threads).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Sequence

#: seconds between scans when every remaining stage waits for another worker
POLL_S = 2.0


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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim(run_dir: Path, s) -> Path | None:
    """Create ``run_dir/.locks/<kind>-<key>.lock`` (our pid) unless another live worker holds it; the lock
    path, or None."""
    locks = Path(run_dir) / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    path = locks / f"{s.kind}-{s.key}.lock"
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                pid = int(path.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and _alive(pid):
                return None
            path.unlink(missing_ok=True)  # its worker died: take it over
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(str(os.getpid()))
        return path
    return None


def work(stages: Sequence, run_dir, run: Callable, say=print, prefix: str = "", poll_s: float = POLL_S) -> int:
    """Run every unfinished stage this worker can claim, in plan order, until all are finished.

    ``run(stage) -> bool`` runs one stage (True when it was cached). Returns how many this worker ran."""
    from .pipeline import is_done

    run_dir = Path(run_dir)
    pending = [s for s in stages if not is_done(stage_path(s, run_dir))]
    ran, t_all, total = 0, time.perf_counter(), len(pending)
    while pending:
        started = False
        for s in list(pending):
            if is_done(stage_path(s, run_dir)):
                pending.remove(s)
                continue
            if not all(is_done(u) for u in upstream_paths(s, run_dir)):
                continue
            lock = claim(run_dir, s)
            if lock is None:
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
                lock.unlink(missing_ok=True)
            started = True
            break  # rescan from the start: earlier stages of the plan first
        if not started and pending:
            time.sleep(poll_s)
    return ran

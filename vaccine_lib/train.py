"""Run every stage a profile's notebooks need: ``python -m vaccine_lib.train --profile P``.

The plan is the experiment registry's (``vaccine_lib.grids.plan``): the distinct alignment,
fine-tuning, evaluation and drift stages of the chosen notebooks, deduplicated by stage key, each
marked cached or not. ``--dry-run`` prints it; otherwise the stages not cached yet run in order, one
progress line each (stage, done/total, elapsed). The notebooks then find everything cached.

Under ``torchrun`` / ``accelerate launch`` (``--train-only`` is implied) every rank trains each stage
together (DDP), rank 0 writes it, the others wait and read it; evaluation is left to the notebooks.
The global batch is ``processes x batch_size x grad_accum``; the stage key does not include the
number of processes.

Examples::

    python -m vaccine_lib.train --profile smoke --dry-run
    python -m vaccine_lib.train --profile default --notebooks 01,03
    python -m vaccine_lib.train --profile smoke --override align.lr=1e-3 --override sweeps.ps=[0.0]
    python -m vaccine_lib.train --profile default --jobs 2      # two worker processes, one thread each
    accelerate launch --config_file configs/accelerate/ddp_gpu.yaml -m vaccine_lib.train --profile paper
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Sequence

from .errors import ConfigError
from .grids import NOTEBOOKS, Stage, check_pools, format_plan, parse_notebooks, plan, run_stage
from .profiles import Profile, load_profile, parse_overrides, profile_names

#: how long the ranks of a launch wait for each other in a collective (rank 0 builds the data first)
PROCESS_GROUP_TIMEOUT = timedelta(hours=2)
TRAIN_KINDS = ("align", "finetune")


def init_distributed():
    """Under a launcher (``WORLD_SIZE`` > 1 and ``MASTER_ADDR`` set): initialise the process group the
    Trainer uses (``accelerate.PartialState``; gloo on CPU) and return the state; ``None`` otherwise."""
    if int(os.environ.get("WORLD_SIZE") or 1) <= 1 or not os.environ.get("MASTER_ADDR"):
        return None
    import torch
    from accelerate import PartialState

    if not torch.cuda.is_available():
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")
    cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    return PartialState(cpu=cpu, timeout=PROCESS_GROUP_TIMEOUT)


def execute(P: Profile, stages: Sequence[Stage], run_dir, say=print, prefix: str = "") -> int:
    """Run the stages in order with one progress line each; returns how many actually ran. Removes the
    ``.tmp-*`` stage folders that dead processes left behind first."""
    from .pipeline import clean_run_dir

    for stale in clean_run_dir(run_dir):
        say(f"{prefix}removed {stale} (left by an interrupted run)")
    ran, t_all = 0, time.perf_counter()
    todo = [s for s in stages if not s.cached]
    for i, s in enumerate(todo, 1):
        t0 = time.perf_counter()
        cached = run_stage(P, s, run_dir)
        ran += not cached
        say(f"{prefix}[{i}/{len(todo)}] {s.kind} {s.label}: {'cached' if cached else 'done'} in "
            f"{time.perf_counter() - t0:.1f} s (elapsed {time.perf_counter() - t_all:.0f} s)", flush=True)
    return ran


def run_workers(P: Profile, argv: Sequence[str], jobs: int, say=print) -> None:
    """Start ``jobs`` worker processes (``--worker``, one share of the CPU threads each) that run the plan's
    stages in parallel (``vaccine_lib.scheduler``); raise when one of them fails."""
    import subprocess

    threads = P.threads or max(1, (os.cpu_count() or 1) // jobs)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "vaccine_lib.train", *argv, "--worker", "--threads", str(threads)]
    say(f"train: {jobs} worker processes, {threads} thread(s) each", flush=True)
    procs = [subprocess.Popen(cmd + ["--worker-id", str(i)], env=env) for i in range(jobs)]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise ConfigError(f"train: worker exit codes {codes}; see the lines above (each worker prints its stages)")


def train(P: Profile, notebooks: Sequence[str] | None = None, run_dir=None, dry_run: bool = False,
          train_only: bool = False, log=print, worker: int | None = None) -> list[Stage]:
    """Print the plan and run every stage not cached yet (``dry_run``: only the plan). Returns the plan."""
    from contextlib import nullcontext

    run_dir = Path(run_dir or P.run_dir())
    notebooks = list(notebooks or NOTEBOOKS)
    state = None if dry_run else init_distributed()
    main = state is None or state.is_main_process
    say = log if main else (lambda *a, **k: None)
    kinds = TRAIN_KINDS if (train_only or state is not None) else ("align", "finetune", "eval", "drift")
    with state.main_process_first() if state is not None else nullcontext():  # rank 0 builds missing data first
        check_pools(P, notebooks)
        stages = plan(P, notebooks, run_dir, kinds=kinds)
    if not worker:  # with --jobs, worker 0 alone prints the plan the workers share
        say(f"train: profile {P.label!r}, notebooks {','.join(notebooks)} -> {run_dir}")
        say(format_plan(stages))
    if state is not None:
        say(f"data parallel: {state.num_processes} processes ({state.distributed_type}); global batch = "
            f"{state.num_processes} x align {P.align.batch_size} / fine-tune {P.finetune.batch_size} per process "
            f"(x grad_accum); the stage key does not include the number of processes")
    if dry_run:
        return stages
    if P.threads and state is None:
        import torch

        torch.set_num_threads(P.threads)
    t0 = time.perf_counter()
    if worker is not None:  # one of several processes sharing the plan (--jobs)
        from .pipeline import clean_run_dir
        from .scheduler import work

        if worker == 0:
            clean_run_dir(run_dir)
        ran = work(stages, run_dir, lambda s: run_stage(P, s, run_dir), say, prefix=f"worker {worker}: ")
    else:
        ran = execute(P, stages, run_dir, say)
    say(f"train: {len(stages)} stages ({ran} run, {len(stages) - ran} cached) in {time.perf_counter() - t0:.0f} s "
        f"under {run_dir}", flush=True)
    return stages


def _without(argv: list, flag: str) -> list:
    """``argv`` without ``flag`` and its value (``--flag V`` or ``--flag=V``)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == flag:
            skip = True
        elif not a.startswith(flag + "="):
            out.append(a)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vaccine_lib.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="default",
                        help=f"one of {', '.join(profile_names())} or a profile YAML path (default: default)")
    parser.add_argument("--notebooks", default=None, help="comma-separated notebook numbers, e.g. 01,03 (default: all)")
    parser.add_argument("--dry-run", action="store_true", help="only print the plan")
    parser.add_argument("--train-only", action="store_true", help="only alignment and fine-tuning stages")
    parser.add_argument("--run-dir", default=None, help="stage cache (default: runs/<profile>, what the notebooks use)")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="profile override, repeatable: section.field=value (YAML value), e.g. align.lr=1e-3")
    parser.add_argument("--jobs", type=int, default=1,
                        help="worker processes sharing the plan (default 1; on CPU one thread each is the fastest)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker-id", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not 1 <= args.jobs <= 64:
        parser.error(f"--jobs {args.jobs}: allowed range 1..64 (worker processes); fix: e.g. --jobs 2")
    try:
        notebooks = parse_notebooks(args.notebooks)
        P = load_profile(args.profile, parse_overrides(args.override))
    except ConfigError as exc:
        parser.error(str(exc))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if P.data_source != "hub":
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from .experiments import quiet

    quiet()
    if args.threads:
        P = P.model_copy(update={"threads": args.threads})
    try:
        if args.jobs > 1 and not args.worker and not args.dry_run:
            check_pools(P, notebooks)
            forwarded = [a for a in (argv if argv is not None else sys.argv[1:])]
            forwarded = _without(forwarded, "--jobs")
            run_workers(P, forwarded, args.jobs)
            return 0
        train(P, notebooks, args.run_dir, dry_run=args.dry_run, train_only=args.train_only,
              worker=args.worker_id if args.worker else None)
    except ConfigError as exc:
        print(f"train: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

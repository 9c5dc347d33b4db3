"""The runner: the registry's plan executed (workers, locks, DDP), then the notebooks (papermill).

plan: the stages the notebooks need, cached or to run; train: run the missing ones (--jobs N workers, each
stage locked by an flock the kernel drops when a worker dies; under torchrun / accelerate launch every rank
trains, rank 0 writes); reproduce: each notebook's stages, then the notebook, into results/<profile>/ (the
default profile also refreshes figures/ and notebooks/), then the runtime table; report: one HTML file."""

import argparse
import fcntl
import json
import os
import subprocess
import sys
import time
from contextlib import nullcontext
from datetime import timedelta
from pathlib import Path
from typing import Callable, Sequence

from . import runtime
from .atomic import atomic_path
from .cli import arg_int, env_int, errors_as_exit, int_in, writable_dir
from .config import AlignConfig
from .errors import ConfigError
from .notebook_runs import write_timings, clean_for_commit, format_timings, notebook_path, report, run_notebook
from .profiles import Profile, load_profile, parse_overrides, profile_names
from .registry import KINDS, NOTEBOOKS, Stage, check_pools, format_plan, parse_notebooks, plan
from .tables import quiet
from .stages import align, clean_run_dir, drift, evaluate, finetune, is_done, stage_dir

#: how long the ranks of a launch wait for each other in a collective (rank 0 builds the data first)
PROCESS_GROUP_TIMEOUT = timedelta(hours=2)
#: seconds between scans when every remaining stage waits for another worker
POLL_S = 2.0
#: which runnable stage a worker takes first (alignments unblock the most stages)
PRIORITY = {"align": 0, "eval": 1, "drift": 2, "finetune": 3}
JOBS_RANGE = (1, 64)
RUN_DIR_FIX = "pass a writable folder with free space (--run-dir; reproduce: the profile's runs/ and results/)"


class StageLock:
    """A worker's ``flock`` on one stage, held while the file is open; the kernel drops it when the process dies.
    The lock files stay (one inode per stage: two workers never lock two files of one stage)."""

    def __init__(self, path: Path, fd: int):
        self.path, self.fd = path, fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None


def lock_stage(run_dir, s) -> StageLock | None:
    """An exclusive lock on stage ``s`` for this process, or None when another live process holds it."""
    path = Path(run_dir) / ".locks" / f"{s.kind}-{s.key}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())  # for people looking at the folder; the flock is the lock
    return StageLock(path, fd)


def upstream_paths(s: Stage, run_dir) -> list[Path]:
    """Folders that must be finished before stage ``s`` may start."""
    if s.kind != "finetune" and not isinstance(s.cfg, AlignConfig):  # eval / drift of a fine-tuned model
        return [stage_dir(run_dir, "finetune", s.cfg)]
    a = s.cfg if isinstance(s.cfg, AlignConfig) else s.cfg.align
    return [] if s.kind == "align" or a.method == "none" else [stage_dir(run_dir, "align", a)]


def _progress(prefix, i, total, s, cached, t0, t_all) -> str:
    return (f"{prefix}[{i}/{total}] {s.kind} {s.label}: {'cached' if cached else 'done'} in "
            f"{time.perf_counter() - t0:.1f} s (elapsed {time.perf_counter() - t_all:.0f} s)")


def work(stages: Sequence[Stage], run_dir, run: Callable, say=print, prefix: str = "", poll_s: float = POLL_S) -> int:
    """Run every unfinished stage this worker can lock (by :data:`PRIORITY`, then plan order) until all are
    finished; ``run(stage)`` returns True when it was cached. Returns how many this worker ran."""
    done = lambda s: is_done(s.path(run_dir))  # noqa: E731
    order = {id(s): i for i, s in enumerate(stages)}
    pending = sorted((s for s in stages if not done(s)), key=lambda s: (PRIORITY.get(s.kind, 9), order[id(s)]))
    ran, t_all, total = 0, time.perf_counter(), len(pending)
    while pending:
        started = False
        for s in list(pending):
            if done(s):
                pending.remove(s)
                continue
            held = all(map(is_done, upstream_paths(s, run_dir))) and lock_stage(run_dir, s)
            if not held:
                continue
            try:
                if done(s):  # finished between the check and the lock
                    pending.remove(s)
                    continue
                t0 = time.perf_counter()
                cached = run(s)
                ran += not cached
                pending.remove(s)
                say(_progress(prefix, total - len(pending), total, s, cached, t0, t_all), flush=True)
            finally:
                held.release()
            started = True
            break  # rescan from the start: higher-priority stages first
        if not started and pending:
            time.sleep(poll_s)
    return ran


def run_stage(P: Profile, s: Stage, run_dir) -> bool:
    """Run one planned stage (cached stages return at once); True when it was cached."""
    if s.kind in ("align", "finetune"):
        return {"align": align, "finetune": finetune}[s.kind](s.cfg, run_dir).cached
    return (evaluate(s.cfg, P.eval, run_dir, tasks=s.tasks) if s.kind == "eval"
            else drift(s.cfg, run_dir, n_samples=P.drift.n_samples))["cached"]


def init_distributed():
    """Under a launcher (``WORLD_SIZE`` > 1 and ``MASTER_ADDR`` set): initialise the process group the
    Trainer uses (``accelerate.PartialState``; gloo on CPU) and return the state; ``None`` otherwise."""
    world = int_in("WORLD_SIZE", os.environ.get("WORLD_SIZE") or 1, 1, 1 << 16, "set by the launcher, or unset it")
    if world <= 1 or not os.environ.get("MASTER_ADDR"):
        return None
    import torch  # heavy: only under a launcher
    from accelerate import PartialState
    if not torch.cuda.is_available():
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")
    cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    return PartialState(cpu=cpu, timeout=PROCESS_GROUP_TIMEOUT)


def execute(P: Profile, stages: Sequence[Stage], run_dir, say=print, prefix: str = "") -> int:
    """Run the stages in plan order (every rank of a launch in step), one progress line each, after removing the
    ``.tmp-*`` folders of dead processes; returns how many actually ran."""
    for stale in clean_run_dir(run_dir):
        say(f"{prefix}removed {stale} (left by an interrupted run)")
    ran, t_all, todo = 0, time.perf_counter(), [s for s in stages if not s.cached]
    for i, s in enumerate(todo, 1):
        t0 = time.perf_counter()
        cached = run_stage(P, s, run_dir)
        ran += not cached
        say(_progress(prefix, i, len(todo), s, cached, t0, t_all), flush=True)
    return ran


def _flat(d: dict, prefix: str = "") -> dict:
    """``{"align": {"lr": 1e-3}}`` -> ``{"align.lr": 1e-3}`` (overrides forwarded to the workers)."""
    out = {}
    for k, v in (d or {}).items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v})
    return out


def run_workers(P: Profile, notebooks: Sequence[str], jobs: int, say=print, extra: Sequence[str] = ()) -> None:
    """Run the plan's stages in ``jobs`` worker processes (``train --worker``, a share of the CPU threads each)."""
    threads = P.threads or max(1, (os.cpu_count() or 1) // jobs)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "vaccine_lib.runner", "train", "--profile", P.name if P.committed else str(P.path),
           "--notebooks", ",".join(notebooks), *extra, "--worker", "--threads", str(threads)]
    cmd += [a for k, v in _flat(P.overrides).items() for a in ("--override", f"{k}={json.dumps(v)}")]
    say(f"train: {jobs} worker processes, {threads} thread(s) each", flush=True)
    procs = [subprocess.Popen(cmd + ["--worker-id", str(i)], env=env) for i in range(jobs)]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise ConfigError(f"train: worker exit codes {codes}; see the lines above (each worker prints its stages)")


def train(P: Profile, notebooks: Sequence[str] | None = None, run_dir=None, dry_run: bool = False,
          train_only: bool = False, worker: int | None = None) -> list[Stage]:
    """Print the plan and run every stage not cached yet (``dry_run``: only the plan). Returns the plan."""
    run_dir = Path(run_dir or P.run_dir())
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"run dir {run_dir} is a file, not a folder; fix: {RUN_DIR_FIX}")
    notebooks = list(notebooks or NOTEBOOKS)
    state = None if dry_run else init_distributed()
    say = print if state is None or state.is_main_process else (lambda *a, **k: None)
    with state.main_process_first() if state is not None else nullcontext():  # rank 0 builds missing data first
        check_pools(P, notebooks)
        stages = plan(P, notebooks, run_dir, kinds=KINDS[:2] if train_only or state is not None else KINDS)
    if not worker:  # with --jobs, worker 0 alone prints the plan the workers share
        say(f"train: profile {P.label!r}, notebooks {','.join(notebooks)} -> {run_dir}\n{format_plan(stages)}")
    if state is not None:
        say(f"data parallel: {state.num_processes} processes ({state.distributed_type}); global batch = "
            f"{state.num_processes} x align {P.align.batch_size} / fine-tune {P.finetune.batch_size} per process "
            f"(x grad_accum); the stage key does not include the number of processes")
    if dry_run:
        return stages
    writable_dir(run_dir, "run dir", RUN_DIR_FIX)
    if P.threads and state is None:
        import torch  # heavy: only when stages run
        torch.set_num_threads(P.threads)
    t0 = time.perf_counter()
    if worker is not None:  # one of several processes sharing the plan (--jobs)
        if worker == 0:
            clean_run_dir(run_dir)
        ran = work(stages, run_dir, lambda s: run_stage(P, s, run_dir), say, prefix=f"worker {worker}: ")
    else:
        ran = execute(P, stages, run_dir, say)
    say(f"train: {len(stages)} stages ({ran} run, {len(stages) - ran} cached) in {time.perf_counter() - t0:.0f} s "
        f"under {run_dir}", flush=True)
    return stages


def reproduce(profile: str = "default", only: str | None = None, overrides: dict | None = None,
              timeout: int | None = None, keep_going: bool = True, say=print, jobs: int = 1) -> dict:
    """Run the notebooks (each one's stages first; with ``jobs`` > 1 every stage first in that many workers);
    return the timing summary (also in ``timings.json``)."""
    quiet()
    notebooks = parse_notebooks(only)
    P = load_profile(profile, overrides)
    check_pools(P, notebooks)  # everything is validated before the first stage runs
    results = writable_dir(P.results_dir(), "results dir", RUN_DIR_FIX)
    writable_dir(P.run_dir(), "run dir", RUN_DIR_FIX)
    for tmp in (t for t in results.glob(".tmp-*") if t.is_file()):  # left by an interrupted run's atomic writes
        tmp.unlink(missing_ok=True)
    say(f"reproduce: profile {P.label!r} ({P.path}), notebooks {','.join(notebooks)}; executed notebooks -> "
        f"{results}; figures -> {P.figures_dir()}", flush=True)
    rows, failed, t_all, train_seconds = [], [], time.perf_counter(), None
    if jobs > 1:
        run_workers(P, notebooks, jobs, say)
        train_seconds = round(time.perf_counter() - t_all, 1)
        say(f"reproduce: every stage done by {jobs} workers in {train_seconds:.0f} s", flush=True)
    for k, nb in enumerate(notebooks, 1):
        name, t0, stages = NOTEBOOKS[nb], time.perf_counter(), plan(P, [nb])
        row = {"notebook": f"{name}.ipynb", "stages": len(stages), "stages_run": sum(not s.cached for s in stages)}
        say(f"[notebook {k}/{len(notebooks)}] {name}: {len(stages)} stages, {row['stages_run']} to run", flush=True)
        try:
            execute(P, stages, P.run_dir(), say, prefix="    ")
            row["stage_seconds"] = round(time.perf_counter() - t0, 1)
            out = results / f"{name}.ipynb"
            nb_secs = run_notebook(notebook_path(nb), out, P.name if P.committed else P.path,
                                   overrides=P.overrides or None, timeout=timeout)
            if P.committed:
                clean_for_commit(out)
                with atomic_path(notebook_path(nb)) as tmp:
                    tmp.write_bytes(out.read_bytes())
            row.update(notebook_seconds=round(nb_secs, 1), status="ok")
            say(f"    notebook executed in {nb_secs:.1f} s (total {time.perf_counter() - t0:.1f} s)", flush=True)
        except Exception as exc:  # papermill raises PapermillExecutionError with the cell's traceback
            row["status"], text = "failed", str(exc)
            failed.append(name)
            say(f"    FAILED after {time.perf_counter() - t0:.1f} s\n{text[-3000:]}", flush=True)
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        write_timings(results / "timings.json", P, rows, only, time.perf_counter() - t_all)
        if failed and not keep_going:
            break
    summary = write_timings(results / "timings.json", P, rows, only, time.perf_counter() - t_all, jobs=jobs,
                             parallel_stage_seconds=train_seconds)
    say(format_timings(summary), flush=True)
    if not only:  # every stage time + every notebook time -> the runtime table (and, for default, the README)
        table = runtime.write_runtime(P, jobs=jobs, table=P.figures_dir() / "tables" / "runtime.csv")
        say(table.to_string(index=False), flush=True)
        if P.committed:
            runtime.render_readme()
    return {**summary, "failed": failed} if failed else summary


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m vaccine_lib.runner", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--profile", default="default",
                        help=f"one of {', '.join(profile_names())} or a profile YAML path (default: default)")
    common.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="profile override, repeatable: section.field=value (YAML value), e.g. align.lr=1e-3")
    common.add_argument("--jobs", type=arg_int("--jobs", *JOBS_RANGE, 2), default=None,
                        help="worker processes for the stages (1..64, one thread each; default 1, reproduce: $VACCINE_JOBS or 1)")
    for name in ("plan", "train"):
        p = sub.add_parser(name, parents=[common], help="print the plan" if name == "plan" else "run the stages")
        p.add_argument("--notebooks", default=None, help="comma-separated notebook numbers, e.g. 01,03 (default: all)")
        p.add_argument("--train-only", action="store_true", help="only alignment and fine-tuning stages")
        p.add_argument("--run-dir", default=None, help="stage cache (default: runs/<profile>, what the notebooks use)")
        p.add_argument("--dry-run", action="store_true", default=name == "plan", help="only print the plan")
        p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
        p.add_argument("--worker-id", type=arg_int("--worker-id", 0, JOBS_RANGE[1] - 1, 0), default=0,
                       help=argparse.SUPPRESS)
        p.add_argument("--threads", type=arg_int("--threads", 1, 1024, 1), default=None, help=argparse.SUPPRESS)
    p = sub.add_parser("reproduce", parents=[common], help="stages, then the notebooks")
    p.add_argument("--only", default=None, help="comma-separated notebook numbers, e.g. 01,03")
    p.add_argument("--timeout", type=arg_int("--timeout", 1, 7 * 24 * 3600, 3600), default=None,
                   help="per-cell timeout in seconds (1..604800; default: none)")
    p.add_argument("--dry-run", action="store_true", help="print the plan of every notebook and stop")
    p.add_argument("--report", default=None, metavar="HTML", help="same as the report subcommand")
    p.add_argument("--stop-on-error", action="store_true", help="stop at the first failing notebook")
    sub.add_parser("report", help="the committed notebooks as one HTML file").add_argument(
        "--out", default="results/report.html", metavar="HTML")
    return ap


def main(argv=None) -> int:
    ap = parser()
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    with errors_as_exit(ap, f"{ap.prog} {args.command}"):
        if args.command == "report" or getattr(args, "report", None):
            print(f"report: {report(Path(getattr(args, 'out', None) or args.report))}")
            return 0
        overrides = parse_overrides(args.override)
        P = load_profile(args.profile, overrides)
        jobs = args.jobs or (env_int("VACCINE_JOBS", 1, *JOBS_RANGE, "worker processes for the stages")
                             if args.command == "reproduce" else 1)  # never workers inside a DDP launch by surprise
        for var, value in (("TOKENIZERS_PARALLELISM", "false"), ("PYDEVD_DISABLE_FILE_VALIDATION", "1"),
                           ("MPLBACKEND", "agg")) + ((("HF_HUB_OFFLINE", "1"),) if P.data_source != "hub" else ()):
            os.environ.setdefault(var, value)  # quiet workers and notebook kernels, offline unless on the Hub
        if args.command == "reproduce" and args.dry_run:
            print("\n".join(f"{NOTEBOOKS[nb]}:\n{format_plan(plan(P, [nb]))}" for nb in parse_notebooks(args.only)))
        elif args.command == "reproduce":
            failed = reproduce(args.profile, only=args.only, overrides=overrides, timeout=args.timeout,
                               keep_going=not args.stop_on_error, jobs=jobs).get("failed")
            if failed:
                print(f"reproduce: {len(failed)} notebook(s) failed: {', '.join(failed)}", file=sys.stderr)
                return 1
        else:
            notebooks = parse_notebooks(args.notebooks)
            quiet()
            P = P.model_copy(update={"threads": args.threads}) if args.threads else P
            if jobs > 1 and not args.worker and not args.dry_run:
                check_pools(P, notebooks)
                run_workers(P, notebooks, jobs, extra=[*(["--run-dir", args.run_dir] if args.run_dir else []),
                                                       *(["--train-only"] if args.train_only else [])])
            else:
                train(P, notebooks, args.run_dir, dry_run=args.dry_run, train_only=args.train_only,
                      worker=args.worker_id if args.worker else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())

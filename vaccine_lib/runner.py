"""The runner: execute the registry's plan (workers, locks, DDP), then the notebooks (papermill).

One command line, ``python -m vaccine_lib.runner <subcommand>`` (``make`` calls it):

- ``plan``       print the stages the notebooks need, each cached or to run (``make plan``)
- ``train``      run every stage not cached yet, ``--jobs N`` worker processes (``make train``)
- ``reproduce``  stages, then every notebook via papermill into ``results/<profile>/`` (``make reproduce``)
- ``report``     the committed notebooks as one HTML file (``make report``)

``python -m vaccine_lib.train`` / ``python -m vaccine_lib.reproduce`` are the same ``train`` / ``reproduce``
subcommands under their earlier names. The runtime table is ``vaccine_lib.runtime``, benchmarks ``vaccine_lib.bench``.

Workers (``--jobs N``): each walks the plan and runs the first stage that is not finished, whose upstream
stages are finished, and that it can lock: an exclusive ``flock`` on ``run_dir/.locks/<kind>-<key>.lock``
(:class:`StageLock`), which the kernel drops when a worker dies. Alignments go first (they unblock most),
then the evaluation and drift of models that exist, then new fine-tunings, so results arrive model by model.
Results equal a sequential run's (a stage is a function of its config, seed and upstream stages). One machine.

Under ``torchrun`` / ``accelerate launch`` (``--train-only`` implied) every rank trains each stage together
(DDP), rank 0 writes it, the others read it; the global batch is ``processes x batch_size x grad_accum`` and
the stage key does not include the number of processes.

Executed notebooks and ``timings.json`` are written atomically (an interrupted run leaves the previous
complete file); the committed profile (``configs/profiles/default.yaml``, no overrides) also writes
``figures/`` and refreshes ``notebooks/`` (outputs of cells tagged ``generations`` cleared). A complete
run writes the runtime table (``vaccine_lib.runtime``). The notebooks read the profile from
``$VACCINE_PROFILE``; overrides go in as the papermill parameter ``overrides``.

Examples::

    python -m vaccine_lib.runner plan --profile smoke
    python -m vaccine_lib.runner train --profile default --jobs 2 --override align.lr=1e-3
    python -m vaccine_lib.runner reproduce --profile smoke --only 01,03
    accelerate launch --config_file configs/accelerate/ddp_gpu.yaml -m vaccine_lib.train --profile paper
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from contextlib import nullcontext
from datetime import timedelta
from pathlib import Path
from typing import Callable, Sequence

from . import pipeline, runtime
from .atomic import atomic_path, atomic_write_text
from .config import AlignConfig
from .errors import ConfigError
from .paths import REPO_ROOT
from .profiles import Profile, load_profile, parse_overrides, profile_names
from .provenance import provenance
from .registry import NOTEBOOKS, Stage, check_pools, format_plan, parse_notebooks, plan
from .tables import quiet

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
KERNEL = "python3"
#: how long the ranks of a launch wait for each other in a collective (rank 0 builds the data first)
PROCESS_GROUP_TIMEOUT = timedelta(hours=2)
#: seconds between scans when every remaining stage waits for another worker
POLL_S = 2.0
#: which runnable stage a worker takes first (see the module docstring)
PRIORITY = {"align": 0, "eval": 1, "drift": 2, "finetune": 3}
JOBS_RANGE = (1, 64)


# --------------------------------------------------------------------------- checked inputs


def int_in(name: str, text, lo: int, hi: int, fix: str) -> int:
    """``text`` as an integer within [lo, hi], else a ConfigError naming ``name``, the range and the fix."""
    try:
        value = int(str(text).strip())
    except ValueError:
        value = None
    if value is None or not lo <= value <= hi:
        raise ConfigError(f"{name}={text!r}: allowed range {lo}..{hi} (an integer); fix: {fix}")
    return value


def env_int(var: str, default: int, lo: int, hi: int, what: str) -> int:
    """The environment variable ``var`` as an integer in [lo, hi] (``default`` when unset or empty)."""
    text = os.environ.get(var, "")
    return default if not text.strip() else int_in(var, text, lo, hi, f"export {var}={default} ({what}) or unset it")


def _arg_int(flag: str, lo: int, hi: int, example: int):
    def convert(text):
        try:
            return int_in(flag, text, lo, hi, f"e.g. {flag} {example}")
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return convert


def writable_dir(path, what: str, fix: str) -> Path:
    """Create folder ``path`` (and parents) and probe that a file can be written there; otherwise a
    ConfigError in one line naming the path and ``fix``. Nothing is left behind by the probe."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".tmp-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except FileExistsError:
        raise ConfigError(f"{what} {path} is a file, not a folder; fix: {fix}") from None
    except OSError as exc:
        raise ConfigError(f"{what} {path}: {fs_problem(exc)}; fix: {fix}") from None
    return path


def fs_problem(exc: OSError) -> str:
    return {errno.ENOSPC: "no space left on the device", errno.EROFS: "read-only file system",
            errno.EACCES: "not writable (permission denied)", errno.EPERM: "not writable (permission denied)",
            errno.ENOTDIR: "a file is in the way of a folder", errno.EEXIST: "a file is in the way of a folder",
            errno.EDQUOT: "disk quota exceeded"}.get(exc.errno, exc.strerror or str(exc))


def fs_error_line(prog: str, exc: OSError) -> str:
    """One line for a file-system fault met while running: the path, the problem, the fix."""
    where = exc.filename or "the output folder"
    return (f"{prog}: {fs_problem(exc)} writing {where}; nothing half-written is kept (stage and table writes "
            "are atomic). Fix: free space / make it writable, or choose another folder (--run-dir), then rerun")


# --------------------------------------------------------------------------- workers and locks


class StageLock:
    """A worker's exclusive ``flock`` on one stage, held while the file stays open. The kernel drops it when
    the process dies, so a dead worker's stage is free again at once; the lock files stay (one inode per
    stage, so two workers can never hold locks on two different files of the same stage)."""

    def __init__(self, path: Path, fd: int):
        self.path, self.fd = path, fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None


def lock_stage(run_dir, s) -> StageLock | None:
    """An exclusive lock on stage ``s`` for this process, or None when another live process holds it."""
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
    return StageLock(path, fd)


def upstream_paths(s: Stage, run_dir) -> list[Path]:
    """Folders that must be finished before stage ``s`` may start."""
    cfg = s.cfg
    if s.kind == "align":
        return []
    if isinstance(cfg, AlignConfig):  # evaluation of an aligned model (or of the base model)
        return [] if cfg.method == "none" else [pipeline.stage_dir(run_dir, "align", cfg)]
    if s.kind == "finetune":
        return [] if cfg.align.method == "none" else [pipeline.stage_dir(run_dir, "align", cfg.align)]
    return [pipeline.stage_dir(run_dir, "finetune", cfg)]  # eval / drift of a fine-tuned model


def work(stages: Sequence[Stage], run_dir, run: Callable, say=print, prefix: str = "", poll_s: float = POLL_S) -> int:
    """Run every unfinished stage this worker can lock (by :data:`PRIORITY`, then plan order) until all are
    finished. ``run(stage) -> bool`` runs one stage (True when cached). Returns how many this worker ran."""
    done = lambda s: pipeline.is_done(s.path(run_dir))  # noqa: E731
    order = {id(s): i for i, s in enumerate(stages)}
    pending = sorted((s for s in stages if not done(s)), key=lambda s: (PRIORITY.get(s.kind, 9), order[id(s)]))
    ran, t_all, total = 0, time.perf_counter(), len(pending)
    while pending:
        started = False
        for s in list(pending):
            if done(s):
                pending.remove(s)
                continue
            if not all(pipeline.is_done(u) for u in upstream_paths(s, run_dir)):
                continue
            held = lock_stage(run_dir, s)
            if held is None:
                continue
            try:
                if done(s):  # finished between the check and the lock
                    pending.remove(s)
                    continue
                t0 = time.perf_counter()
                cached = run(s)
                ran += not cached
                pending.remove(s)
                say(f"{prefix}[{total - len(pending)}/{total}] {s.kind} {s.label}: {'cached' if cached else 'done'}"
                    f" in {time.perf_counter() - t0:.1f} s (elapsed {time.perf_counter() - t_all:.0f} s)", flush=True)
            finally:
                held.release()
            started = True
            break  # rescan from the start: higher-priority stages first
        if not started and pending:
            time.sleep(poll_s)
    return ran


# --------------------------------------------------------------------------- stages


def run_stage(P: Profile, s: Stage, run_dir) -> bool:
    """Run one planned stage (cached stages return at once); True when it was cached."""
    if s.kind == "align":
        return pipeline.align(s.cfg, run_dir).cached
    if s.kind == "finetune":
        return pipeline.finetune(s.cfg, run_dir).cached
    if s.kind == "eval":
        return pipeline.evaluate(s.cfg, P.eval, run_dir, tasks=s.tasks)["cached"]
    return pipeline.drift(s.cfg, run_dir, n_samples=P.drift.n_samples)["cached"]


def init_distributed():
    """Under a launcher (``WORLD_SIZE`` > 1 and ``MASTER_ADDR`` set): initialise the process group the
    Trainer uses (``accelerate.PartialState``; gloo on CPU) and return the state; ``None`` otherwise."""
    if int_in("WORLD_SIZE", os.environ.get("WORLD_SIZE") or 1, 1, 1 << 20, "set by the launcher") <= 1 \
            or not os.environ.get("MASTER_ADDR"):
        return None
    import torch  # heavy: only under a launcher
    from accelerate import PartialState

    if not torch.cuda.is_available():
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")
    cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    return PartialState(cpu=cpu, timeout=PROCESS_GROUP_TIMEOUT)


def execute(P: Profile, stages: Sequence[Stage], run_dir, say=print, prefix: str = "") -> int:
    """Run the stages in order, one progress line each; returns how many actually ran. Removes the ``.tmp-*``
    stage folders that dead processes left behind first."""
    for stale in pipeline.clean_run_dir(run_dir):
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
    """Start ``jobs`` worker processes (one share of the CPU threads each) that run the plan's stages in
    parallel (:func:`work`); raise when one of them fails."""
    threads = P.threads or max(1, (os.cpu_count() or 1) // jobs)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "vaccine_lib.runner", "train", *argv, "--worker", "--threads", str(threads)]
    say(f"train: {jobs} worker processes, {threads} thread(s) each", flush=True)
    procs = [subprocess.Popen(cmd + ["--worker-id", str(i)], env=env) for i in range(jobs)]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise ConfigError(f"train: worker exit codes {codes}; see the lines above (each worker prints its stages)")


def train(P: Profile, notebooks: Sequence[str] | None = None, run_dir=None, dry_run: bool = False,
          train_only: bool = False, log=print, worker: int | None = None) -> list[Stage]:
    """Print the plan and run every stage not cached yet (``dry_run``: only the plan). Returns the plan."""
    run_dir = Path(run_dir or P.run_dir())
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"run dir {run_dir} is a file, not a folder; fix: pass a folder to --run-dir")
    notebooks = list(notebooks or NOTEBOOKS)
    state = None if dry_run else init_distributed()
    say = log if state is None or state.is_main_process else (lambda *a, **k: None)
    kinds = ("align", "finetune") if (train_only or state is not None) else ("align", "finetune", "eval", "drift")
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
    writable_dir(run_dir, "run dir", "pass a writable folder with free space to --run-dir")
    if P.threads and state is None:
        import torch  # heavy: only when stages run

        torch.set_num_threads(P.threads)
    t0 = time.perf_counter()
    if worker is not None:  # one of several processes sharing the plan (--jobs)
        if worker == 0:
            pipeline.clean_run_dir(run_dir)
        ran = work(stages, run_dir, lambda s: run_stage(P, s, run_dir), say, prefix=f"worker {worker}: ")
    else:
        ran = execute(P, stages, run_dir, say)
    say(f"train: {len(stages)} stages ({ran} run, {len(stages) - ran} cached) in {time.perf_counter() - t0:.0f} s "
        f"under {run_dir}", flush=True)
    return stages


# --------------------------------------------------------------------------- notebooks


def notebook_path(nb: str, notebook_dir: Path = NOTEBOOK_DIR) -> Path:
    path = Path(notebook_dir) / f"{NOTEBOOKS[nb]}.ipynb"
    if not path.is_file():
        raise ConfigError(f"notebook {path} is missing")
    return path


def clean_for_commit(path: Path) -> None:
    """Strip papermill's per-cell metadata and the outputs of cells tagged ``generations`` (model answers)."""
    import nbformat  # notebook tooling: only when notebooks run

    nb = nbformat.read(path, as_version=4)
    nb.metadata.pop("papermill", None)
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code" and "generations" in cell.metadata.get("tags", []):
            cell["outputs"] = []
    nbformat.write(nb, path)


def _ipc_kernel_manager(log: Path | None = None):
    """A kernel manager talking to the kernel over local IPC sockets (no TCP ports, no TCP warning); the
    kernel's own stderr goes to ``log``. Errors in cells still reach the notebook and the papermill exception."""
    from jupyter_client.manager import AsyncKernelManager  # notebook tooling: only when notebooks run

    class IPCKernelManager(AsyncKernelManager):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.transport = "ipc"
            self.ip = str(Path(tempfile.mkdtemp(prefix="vaccine-kernel-")) / "kernel")

        async def _async_launch_kernel(self, kernel_cmd, **kw):
            if log is not None:
                log.parent.mkdir(parents=True, exist_ok=True)
                kw["stderr"] = open(log, "ab")  # noqa: SIM115 - the kernel process owns it
            return await super()._async_launch_kernel(kernel_cmd, **kw)

    return IPCKernelManager


def run_notebook(src: Path, out: Path, profile: str, overrides: dict | None = None, timeout: int | None = None) -> float:
    """Execute one notebook with papermill into ``out`` atomically; return wall seconds. Raises on a failed cell."""
    import papermill as pm  # notebook tooling: only when notebooks run

    os.environ["VACCINE_PROFILE"] = str(profile)
    # the kernel imports this checkout's vaccine_lib (not another installed copy)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    t0 = time.perf_counter()
    with atomic_path(out) as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*TCP.*")
        pm.execute_notebook(str(src), str(tmp), parameters={"overrides": overrides} if overrides else None,
                            kernel_name=KERNEL, cwd=str(src.parent), progress_bar=False, log_output=False,
                            execution_timeout=timeout, kernel_manager_class=_ipc_kernel_manager(out.parent / "kernel.log"))
    return time.perf_counter() - t0


def _flat(d: dict, prefix: str = "") -> dict:
    """``{"align": {"lr": 1e-3}}`` -> ``{"align.lr": 1e-3}`` (overrides forwarded to the workers)."""
    out = {}
    for k, v in (d or {}).items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v})
    return out


def reproduce(profile: str = "default", only: str | None = None, overrides: dict | None = None,
              timeout: int | None = None, keep_going: bool = True, say=print, jobs: int = 1) -> dict:
    """Run the notebooks (each one's stages first, with progress); return the timing summary (also in
    ``timings.json``). ``jobs`` > 1: every stage first runs in that many worker processes."""
    quiet()
    notebooks = parse_notebooks(only)
    P = load_profile(profile, overrides)
    check_pools(P, notebooks)  # everything is validated before the first stage runs
    for var, value in (("TOKENIZERS_PARALLELISM", "false"), ("PYDEVD_DISABLE_FILE_VALIDATION", "1"),
                       ("MPLBACKEND", "agg")) + ((("HF_HUB_OFFLINE", "1"),) if P.data_source != "hub" else ()):
        os.environ.setdefault(var, value)
    fix = "make it a writable folder with free space (or remove the file in its way)"
    results = writable_dir(P.results_dir(), "results dir", fix)
    writable_dir(P.run_dir(), "run dir", fix)
    for tmp in results.glob(".tmp-*"):  # an interrupted earlier run (atomic writes leave only these)
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
    timings = results / "timings.json"
    say(f"reproduce: profile {P.label!r} ({P.path}), notebooks {','.join(notebooks)}; executed notebooks -> "
        f"{results}; figures -> {P.figures_dir()}", flush=True)
    rows, failed, t_all, train_seconds = [], [], time.perf_counter(), None
    if jobs > 1:
        argv = ["--profile", str(P.path) if not P.committed else P.name, "--notebooks", ",".join(notebooks)]
        for k, v in _flat(P.overrides).items():
            argv += ["--override", f"{k}={json.dumps(v)}"]
        run_workers(P, argv, jobs, say)
        train_seconds = round(time.perf_counter() - t_all, 1)
        say(f"reproduce: every stage done by {jobs} workers in {train_seconds:.0f} s", flush=True)
    for k, nb in enumerate(notebooks, 1):
        name, t0 = NOTEBOOKS[nb], time.perf_counter()
        stages = plan(P, [nb])
        todo = sum(not s.cached for s in stages)
        say(f"[notebook {k}/{len(notebooks)}] {name}: {len(stages)} stages, {todo} to run", flush=True)
        row = {"notebook": f"{name}.ipynb", "stages": len(stages), "stages_run": todo}
        try:
            execute(P, stages, P.run_dir(), say, prefix="    ")
            row["stage_seconds"] = round(time.perf_counter() - t0, 1)
            out = results / f"{name}.ipynb"
            nb_secs = run_notebook(notebook_path(nb), out, P.path if not P.committed else P.name,
                                   overrides=P.overrides or None, timeout=timeout)
            if P.committed:
                clean_for_commit(out)
                with atomic_path(notebook_path(nb)) as tmp:
                    tmp.write_bytes(out.read_bytes())
            row.update(notebook_seconds=round(nb_secs, 1), status="ok")
            say(f"    notebook executed in {nb_secs:.1f} s (total {time.perf_counter() - t0:.1f} s)", flush=True)
        except Exception as exc:  # papermill raises PapermillExecutionError with the cell's traceback
            row["status"] = "failed"
            failed.append(name)
            text = str(exc)
            say(f"    FAILED after {time.perf_counter() - t0:.1f} s\n{text if len(text) <= 3000 else '...' + text[-3000:]}",
                flush=True)
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        _write_timings(timings, P, rows, only, time.perf_counter() - t_all)
        if failed and not keep_going:
            break
    summary = _write_timings(timings, P, rows, only, time.perf_counter() - t_all, jobs=jobs,
                             parallel_stage_seconds=train_seconds)
    say(format_timings(summary), flush=True)
    if not only:  # every stage time + every notebook time -> the runtime table (and, for default, the README)
        say(runtime.write_runtime(P, jobs=jobs, table=P.figures_dir() / "tables" / "runtime.csv").to_string(index=False),
            flush=True)
        if P.committed:
            runtime.render_readme()
    if failed:
        summary["failed"] = failed
    return summary


def _write_timings(path: Path, P: Profile, rows: list, only, total: float, jobs: int = 1,
                   parallel_stage_seconds: float | None = None) -> dict:
    merged = rows
    if only and path.is_file():  # a partial run updates the earlier full summary
        try:
            ran = {r["notebook"] for r in rows}
            merged = sorted([r for r in json.loads(path.read_text()).get("notebooks", []) if r["notebook"] not in ran]
                            + rows, key=lambda r: r["notebook"])
        except (ValueError, KeyError):
            merged = rows
    summary = {"profile": P.label, "profile_path": P.path,
               "total_seconds": round(sum(r["seconds"] for r in merged) + (parallel_stage_seconds or 0), 1),
               "this_run_seconds": round(total, 1), "jobs": jobs, "parallel_stage_seconds": parallel_stage_seconds,
               "notebooks": merged, "partial_run": only, "provenance": provenance()}
    atomic_write_text(path, json.dumps(summary, indent=1, default=str) + "\n")
    return summary


def format_timings(summary: dict) -> str:
    lines = [f"timings ({summary['profile']} profile):"]
    for r in summary["notebooks"]:
        lines.append(f"  {r['notebook']:<40} {r['seconds']:>8.1f} s  {r.get('status', '?')}")
    lines.append(f"  {'total':<40} {summary['total_seconds']:>8.1f} s  ({summary['total_seconds'] / 60:.1f} min)")
    return "\n".join(lines)


def report(out: Path, notebook_dir: Path = NOTEBOOK_DIR) -> Path:
    """One HTML file with every notebook in order, as committed (outputs of the last default run), via nbconvert."""
    import nbformat  # notebook tooling: only for the report
    from nbconvert import HTMLExporter

    merged = None
    for nb in NOTEBOOKS:
        book = nbformat.read(notebook_path(nb, notebook_dir), as_version=4)
        if merged is None:
            merged = book
        else:
            merged.cells += book.cells
    html, _ = HTMLExporter().from_notebook_node(merged)
    writable_dir(Path(out).parent, "report folder", "pass a writable path to --out")
    atomic_write_text(Path(out), html)
    return Path(out)


# --------------------------------------------------------------------------- command line


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


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m vaccine_lib.runner", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    jobs = _arg_int("--jobs", *JOBS_RANGE, 2)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--profile", default="default",
                        help=f"one of {', '.join(profile_names())} or a profile YAML path (default: default)")
    common.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="profile override, repeatable: section.field=value (YAML value), e.g. align.lr=1e-3")
    for name in ("plan", "train"):
        p = sub.add_parser(name, parents=[common], help="print the plan" if name == "plan" else "run the stages")
        p.add_argument("--notebooks", default=None, help="comma-separated notebook numbers, e.g. 01,03 (default: all)")
        p.add_argument("--train-only", action="store_true", help="only alignment and fine-tuning stages")
        p.add_argument("--run-dir", default=None, help="stage cache (default: runs/<profile>, what the notebooks use)")
        p.add_argument("--dry-run", action="store_true", default=name == "plan", help="only print the plan")
        if name == "train":
            p.add_argument("--jobs", type=jobs, default=1,
                           help="worker processes sharing the plan (1..64, default 1; on CPU one thread each is fastest)")
            p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
            p.add_argument("--worker-id", type=_arg_int("--worker-id", 0, 63, 0), default=0, help=argparse.SUPPRESS)
            p.add_argument("--threads", type=_arg_int("--threads", 1, 1024, 1), default=None, help=argparse.SUPPRESS)
    p = sub.add_parser("reproduce", parents=[common], help="stages, then the notebooks")
    p.add_argument("--only", default=None, help="comma-separated notebook numbers, e.g. 01,03")
    p.add_argument("--timeout", type=_arg_int("--timeout", 1, 7 * 24 * 3600, 3600), default=None,
                   help="per-cell timeout in seconds (1..604800; default: none)")
    p.add_argument("--dry-run", action="store_true", help="print the plan of every notebook and stop")
    p.add_argument("--report", default=None, metavar="HTML", help="same as the report subcommand")
    p.add_argument("--stop-on-error", action="store_true", help="stop at the first failing notebook")
    p.add_argument("--jobs", type=jobs, default=None,
                   help="worker processes for the stages before the notebooks run (1..64; default $VACCINE_JOBS or 1)")
    p = sub.add_parser("report", help="render the committed notebooks into one HTML file")
    p.add_argument("--out", default="results/report.html", metavar="HTML")
    return ap


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = parser()
    args = ap.parse_args(argv)
    prog = f"{ap.prog} {args.command}"
    try:
        if args.command == "report" or getattr(args, "report", None):
            print(f"report: {report(Path(args.out if args.command == 'report' else args.report))}")
            return 0
        overrides = parse_overrides(args.override)
        P = load_profile(args.profile, overrides)
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        if P.data_source != "hub":
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        if args.command == "reproduce":
            jobs = args.jobs or env_int("VACCINE_JOBS", 1, *JOBS_RANGE, "worker processes for the stages")
            if args.dry_run:
                for nb in parse_notebooks(args.only):
                    print(f"{NOTEBOOKS[nb]}:\n{format_plan(plan(P, [nb]))}")
                return 0
            summary = reproduce(args.profile, only=args.only, overrides=overrides, timeout=args.timeout,
                                keep_going=not args.stop_on_error, jobs=jobs)
            if summary.get("failed"):
                print(f"reproduce: {len(summary['failed'])} notebook(s) failed: {', '.join(summary['failed'])}",
                      file=sys.stderr)
                return 1
            return 0
        notebooks = parse_notebooks(args.notebooks)
        quiet()
        if getattr(args, "threads", None):
            P = P.model_copy(update={"threads": args.threads})
        if args.command == "train" and args.jobs > 1 and not args.worker and not args.dry_run:
            check_pools(P, notebooks)
            run_workers(P, _without(argv[argv.index("train") + 1:], "--jobs"), args.jobs)
            return 0
        train(P, notebooks, args.run_dir, dry_run=args.dry_run, train_only=args.train_only,
              worker=args.worker_id if getattr(args, "worker", False) else None)
    except ConfigError as exc:
        if args.command in ("reproduce", "report"):
            ap.error(str(exc))  # exit 2 with the usage line, as before
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(fs_error_line(prog, exc), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

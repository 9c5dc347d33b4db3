"""Run every notebook of the artifact: ``python -m vaccine_lib.reproduce --profile P``.

For each notebook, first its stages (the registry's plan, ``vaccine_lib.grids``) run with one progress
line each (stage, done/total, elapsed); then papermill executes the notebook, which finds every model
cached and only tabulates and plots. Everything is validated before the first stage runs.

- Executed notebooks go to ``results/<profile>/<notebook>.ipynb`` and the timings to
  ``results/<profile>/timings.json``, both written atomically (temp file + rename): an interrupted run
  leaves the previous complete file, never a half-executed one.
- A complete run then sums every stage's own measured time and every notebook's into
  ``<figures>/tables/runtime.csv`` (``vaccine_lib.runtime``); the default profile's README runtime block is
  generated from it.
- The committed profile (exactly ``configs/profiles/default.yaml``, no overrides) also writes
  ``figures/`` and refreshes the committed notebooks in ``notebooks/`` with their outputs (cells tagged
  ``generations`` cleared: no model answers to harmful prompts are committed).
- The notebooks take the profile from ``$VACCINE_PROFILE`` (their parameters cell), so no cell is injected.

Examples::

    python -m vaccine_lib.reproduce --profile default
    python -m vaccine_lib.reproduce --profile smoke --only 01,03
    python -m vaccine_lib.reproduce --profile smoke --override eval.n_harmful=2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

from .atomic import atomic_path, atomic_write_text
from .errors import ConfigError
from .grids import NOTEBOOKS, EXPERIMENTS, check_pools, format_plan, parse_notebooks, plan
from .profiles import Profile, load_profile, parse_overrides, profile_names

from .paths import REPO_ROOT  # noqa: E402
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
KERNEL = "python3"


def artifacts() -> dict:
    """``{notebook stem: {"figures": [...], "tables": {stem: columns}}}`` from the registry."""
    out = {stem: {"figures": [], "tables": {}} for stem in NOTEBOOKS.values()}
    for e in EXPERIMENTS.values():
        spec = out[NOTEBOOKS[e.notebook]]
        spec["figures"] += list(e.figures)
        spec["tables"].update(e.tables)
    return out


def notebook_path(nb: str, notebook_dir: Path = NOTEBOOK_DIR) -> Path:
    path = Path(notebook_dir) / f"{NOTEBOOKS[nb]}.ipynb"
    if not path.is_file():
        raise ConfigError(f"notebook {path} is missing")
    return path


def clean_for_commit(path: Path) -> None:
    """Strip papermill's per-cell metadata and the outputs of cells tagged ``generations`` (model answers)."""
    import nbformat

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
    kernel's own stderr (its start-up and shutdown chatter) goes to ``log`` instead of the terminal. Errors
    in cells still reach the notebook and the papermill exception."""
    from jupyter_client.manager import AsyncKernelManager

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
    import papermill as pm

    os.environ["VACCINE_PROFILE"] = str(profile)
    # the kernel imports this checkout's vaccine_lib (not another installed copy)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    t0 = time.perf_counter()
    with atomic_path(out) as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*TCP.*")
        pm.execute_notebook(str(src), str(tmp), parameters={"overrides": overrides} if overrides else None,
                            kernel_name=KERNEL, cwd=str(src.parent), progress_bar=False, log_output=False,
                            execution_timeout=timeout,
                            kernel_manager_class=_ipc_kernel_manager(out.parent / "kernel.log"))
    return time.perf_counter() - t0


def _env(P: Profile) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    os.environ.setdefault("MPLBACKEND", "agg")
    if P.data_source != "hub":
        os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _clean_partial(folder: Path) -> None:
    for tmp in folder.glob(".tmp-*"):  # an interrupted earlier run (atomic writes leave only these)
        if tmp.is_file():
            tmp.unlink(missing_ok=True)


def reproduce(profile: str = "default", only: str | None = None, overrides: dict | None = None,
              timeout: int | None = None, keep_going: bool = True, say=print, jobs: int = 1) -> dict:
    """Run the notebooks (stages first, with progress); return the timing summary (also in timings.json).

    ``jobs`` > 1: every stage of every chosen notebook first runs in that many worker processes
    (``python -m vaccine_lib.train --jobs``); the notebooks then find them cached."""
    from .experiments import quiet
    from .train import execute

    quiet()
    notebooks = parse_notebooks(only)
    P = load_profile(profile, overrides)
    check_pools(P, notebooks)  # everything is validated before the first stage runs
    _env(P)
    results = P.results_dir()
    results.mkdir(parents=True, exist_ok=True)
    _clean_partial(results)
    timings = results / "timings.json"
    say(f"reproduce: profile {P.label!r} ({P.path}), notebooks {','.join(notebooks)}; executed notebooks -> "
        f"{results}; figures -> {P.figures_dir()}", flush=True)
    rows, failed, t_all = [], [], time.perf_counter()
    train_seconds = None
    if jobs > 1:
        from .train import run_workers

        argv = ["--profile", str(P.path) if not P.committed else P.name, "--notebooks", ",".join(notebooks)]
        for k, v in _flat(P.overrides).items():
            argv += ["--override", f"{k}={json.dumps(v)}"]
        run_workers(P, argv, jobs, say)
        train_seconds = round(time.perf_counter() - t_all, 1)
        say(f"reproduce: every stage done by {jobs} workers in {train_seconds:.0f} s", flush=True)
    for k, nb in enumerate(notebooks, 1):
        name = NOTEBOOKS[nb]
        t0 = time.perf_counter()
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
            say(f"    FAILED after {time.perf_counter() - t0:.1f} s\n{_short_error(exc)}", flush=True)
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        _write_timings(timings, P, rows, only, time.perf_counter() - t_all)
        if failed and not keep_going:
            break
    summary = _write_timings(timings, P, rows, only, time.perf_counter() - t_all, jobs=jobs,
                             parallel_stage_seconds=train_seconds)
    say(format_timings(summary), flush=True)
    if not only:  # every stage time + every notebook time -> the runtime table (and, for default, the README)
        from . import runtime

        table = runtime.write_runtime(P, jobs=jobs, table=P.figures_dir() / "tables" / "runtime.csv")
        say(table.to_string(index=False), flush=True)
        if P.committed:
            runtime.render_readme()
    if failed:
        summary["failed"] = failed
    return summary


def _flat(d: dict, prefix: str = "") -> dict:
    """``{"align": {"lr": 1e-3}}`` -> ``{"align.lr": 1e-3}`` (overrides forwarded to the workers)."""
    out = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _write_timings(path: Path, P: Profile, rows: list, only, total: float, jobs: int = 1,
                   parallel_stage_seconds: float | None = None) -> dict:
    from .provenance import provenance

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
               "notebooks": merged, "partial_run": only,
               "provenance": provenance()}
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
    import nbformat
    from nbconvert import HTMLExporter

    merged = None
    for nb in NOTEBOOKS:
        book = nbformat.read(notebook_path(nb, notebook_dir), as_version=4)
        if merged is None:
            merged = book
        else:
            merged.cells += book.cells
    html, _ = HTMLExporter().from_notebook_node(merged)
    out = Path(out)
    atomic_write_text(out, html)
    return out


def _short_error(exc: Exception, limit: int = 3000) -> str:
    text = str(exc)
    return text if len(text) <= limit else "...\n" + text[-limit:]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vaccine_lib.reproduce", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="default",
                        help=f"one of {', '.join(profile_names())} or a profile YAML path (default: default)")
    parser.add_argument("--only", default=None, help="comma-separated notebook numbers, e.g. 01,03")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="profile override, repeatable: section.field=value, e.g. align.lr=1e-3")
    parser.add_argument("--timeout", type=int, default=None, help="per-cell timeout in seconds (default: none)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan of every notebook and stop")
    parser.add_argument("--report", default=None, metavar="HTML",
                        help="only render the committed notebooks into one HTML file and stop")
    parser.add_argument("--stop-on-error", action="store_true", help="stop at the first failing notebook")
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("VACCINE_JOBS", 1)),
                        help="worker processes for the stages before the notebooks run ($VACCINE_JOBS, default 1)")
    args = parser.parse_args(argv)
    try:
        overrides = parse_overrides(args.override)
        if args.report:
            print(f"report: {report(Path(args.report))}")
            return 0
        if args.dry_run:
            P = load_profile(args.profile, overrides)
            for nb in parse_notebooks(args.only):
                print(f"{NOTEBOOKS[nb]}:\n{format_plan(plan(P, [nb]))}")
            return 0
        summary = reproduce(args.profile, only=args.only, overrides=overrides, timeout=args.timeout,
                            keep_going=not args.stop_on_error, jobs=args.jobs)
    except ConfigError as exc:
        parser.error(str(exc))
    if summary.get("failed"):
        print(f"reproduce: {len(summary['failed'])} notebook(s) failed: {', '.join(summary['failed'])}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

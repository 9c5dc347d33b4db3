"""Notebooks run by papermill for ``vaccine_lib.runner reproduce``: atomic execution over local IPC sockets,
cleaning for commit (no model answers), the ``timings.json`` summary and the one-file HTML report."""

import json
import os
import tempfile
import time
import warnings
from pathlib import Path

from .atomic import atomic_path, atomic_write_text
from .cli import writable_dir
from .errors import ConfigError
from .paths import REPO_ROOT
from .profiles import Profile
from .provenance import provenance
from .registry import NOTEBOOKS

NOTEBOOK_DIR = REPO_ROOT / "notebooks"


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
                            kernel_name="python3", cwd=str(src.parent), progress_bar=False, log_output=False,
                            execution_timeout=timeout, kernel_manager_class=_ipc_kernel_manager(out.parent / "kernel.log"))
    return time.perf_counter() - t0


def write_timings(path: Path, P: Profile, rows: list, only, total: float, jobs: int = 1,
                   parallel_stage_seconds: float | None = None) -> dict:
    merged, complete = rows, None if only else {"seconds": round(total, 1), "jobs": jobs}
    if only and path.is_file():  # a partial run updates the earlier full summary (and keeps its wall time)
        try:
            old = json.loads(path.read_text())
            ran = {r["notebook"] for r in rows}
            merged = sorted([r for r in old.get("notebooks", []) if r["notebook"] not in ran]
                            + rows, key=lambda r: r["notebook"])
            complete = old.get("complete_run") or (None if old.get("partial_run") else
                                                   {"seconds": old["this_run_seconds"], "jobs": old.get("jobs", 1)})
        except (ValueError, KeyError):
            merged = rows
    summary = {"profile": P.label, "profile_path": P.path,
               "total_seconds": round(sum(r["seconds"] for r in merged) + (parallel_stage_seconds or 0), 1),
               "this_run_seconds": round(total, 1), "complete_run": complete, "jobs": jobs,
               "parallel_stage_seconds": parallel_stage_seconds,
               "notebooks": merged, "partial_run": only, "provenance": provenance()}
    atomic_write_text(path, json.dumps(summary, indent=1, default=str) + "\n")
    return summary


def format_timings(summary: dict) -> str:
    lines = [f"timings ({summary['profile']} profile):"]
    lines += [f"  {r['notebook']:<40} {r['seconds']:>8.1f} s  {r.get('status', '?')}" for r in summary["notebooks"]]
    lines.append(f"  {'total':<40} {summary['total_seconds']:>8.1f} s  ({summary['total_seconds'] / 60:.1f} min)")
    return "\n".join(lines)


def report(out: Path, notebook_dir: Path = NOTEBOOK_DIR) -> Path:
    """One HTML file with every notebook in order, as committed (outputs of the last default run), via nbconvert."""
    import nbformat  # notebook tooling: only for the report
    from nbconvert import HTMLExporter
    writable_dir(Path(out).parent, "report folder", "pass a writable file path to --out")
    books = [nbformat.read(notebook_path(nb, notebook_dir), as_version=4) for nb in NOTEBOOKS]
    for book in books[1:]:
        books[0].cells += book.cells
    html, _ = HTMLExporter().from_notebook_node(books[0])
    atomic_write_text(Path(out), html)
    return Path(out)

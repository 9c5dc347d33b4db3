"""Run every notebook of the artifact with papermill: ``python -m vaccine_lib.reproduce --profile P``.

- Executed copies go to ``results/<profile>/<notebook>.ipynb`` (git-ignored), with a timing
  summary printed at the end and written to ``results/<profile>/timings.json``.
- Figures and tables: ``figures/`` (and ``figures/tables/``) for the ``default`` profile, which
  are the committed artefacts; ``results/<profile>/figures/`` for every other profile, so a
  smoke run never overwrites the committed figures.
- Trained stages are cached under ``runs/<profile>/`` by config hash (``vaccine_lib.pipeline``),
  shared by all notebooks: a rerun only evaluates what changed.
- ``--nbval-copies DIR`` runs the notebooks on the ``smoke`` profile and writes the executed
  notebooks into DIR (``tests/notebooks``), the copies ``make test`` checks with nbval.

Examples::

    python -m vaccine_lib.reproduce --profile default
    python -m vaccine_lib.reproduce --profile smoke --only 01,03
    python -m vaccine_lib.reproduce --nbval-copies tests/notebooks
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .errors import ConfigError
from .profiles import PROFILE_NAMES, default_figures_dir, get_profile

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
KERNEL = "python3"

#: what a default run writes: figure stems (``figures/<stem>.pdf|png``) and tables
#: (``figures/tables/<stem>.csv``) with the columns each must have; tests/test_artifacts.py checks them
ARTIFACTS = {
    "01_harmful_embedding_drift": {
        "figures": ["fig2_harmful_drift"],
        "tables": {"fig2_harmful_drift": ["defense", "p", "hs", "fa", "align_loss", "drift", "drift_sum_sq"],
                   "fig2_trend": ["defense", "hs", "align_loss", "drift"]},
    },
    "02_vaccine_alignment": {
        "figures": ["aligned_models", "alignment_curves"],
        "tables": {"aligned_models": ["model", "method", "hs", "refusal", "fa", "align_loss", "train_seconds"],
                   "alignment_curves": ["model", "step", "key", "value"]},
    },
    "03_harmful_finetuning": {
        "figures": ["table1_hs_fa_vs_p", "table2_sample_counts", "table4_tasks"],
        "tables": {"table1_defenses": ["defense", "p", "n", "hs", "fa"],
                   "table2_sample_counts": ["defense", "p", "n", "hs", "fa"],
                   "table4_tasks": ["defense", "task", "hs", "fa"]},
    },
    "04_evaluation_and_ablations": {
        "figures": ["fig3_drift_during_finetuning", "fig4_tsne", "table6_rho"],
        "tables": {"table1_vs_paper": ["defense"],
                   "fig3_drift_during_finetuning": ["defense", "step", "drift", "align_loss"],
                   "fig4_tsne": ["model", "x", "y"],
                   "table6_rho": ["defense", "rho", "hs", "fa"],
                   "table7_perturbation": ["perturbation", "rho", "hs", "fa"],
                   "table8_lora": ["defense", "lora", "hs", "fa"],
                   "judge_validation": ["judge", "accuracy", "auc", "n_test"]},
    },
    "05_system_overhead": {
        "figures": ["table5_overhead"],
        "tables": {"table5_overhead": ["method", "step_s", "peak_memory_gb", "slowdown"]},
    },
}


def notebooks(only: str | None = None, notebook_dir: Path = NOTEBOOK_DIR) -> list[Path]:
    """The artifact's notebooks in order (``NN_*.ipynb``), optionally filtered by ``--only 01,03``."""
    found = sorted(p for p in Path(notebook_dir).glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise ConfigError(f"no notebooks (NN_*.ipynb) found in {notebook_dir}")
    if not only:
        return found
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    prefixes = {p.name[:2]: p for p in found}
    bad = [w for w in wanted if w.zfill(2)[:2] not in prefixes]
    if bad:
        raise ConfigError(f"--only: unknown notebook(s) {', '.join(bad)}; allowed values: {', '.join(sorted(prefixes))}")
    keep = {w.zfill(2)[:2] for w in wanted}
    return [p for p in found if p.name[:2] in keep]


def _strip_images(path: Path) -> None:
    """Prepare an executed notebook for committing as an nbval copy.

    Drops image outputs (nbval ignores them; keeps tests/notebooks small) and every output of the
    cells that preview model generations (never commit model answers to harmful prompts).
    """
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if "generations(" in cell.source:
            cell["outputs"] = []
            continue
        kept = []
        for out in cell.get("outputs", []):
            data = out.get("data")
            if data and any(k.startswith("image/") for k in data):
                data = {k: v for k, v in data.items() if not k.startswith("image/")}
                if not data:
                    continue
                out["data"] = data
            kept.append(out)
        cell["outputs"] = kept
    nbformat.write(nb, path)


def run_notebook(src: Path, out: Path, profile: str, parameters: dict | None = None, timeout: int | None = None,
                 cwd: Path | None = None) -> float:
    """Execute one notebook with papermill (kernel ``python3``); return wall seconds. Raises on a failed cell."""
    import papermill as pm

    params = {"profile": profile, **(parameters or {})}
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    pm.execute_notebook(str(src), str(out), parameters=params, kernel_name=KERNEL, cwd=str(cwd or src.parent),
                        progress_bar=False, log_output=False, execution_timeout=timeout)
    return time.perf_counter() - t0


def _env_for(profile_name: str) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    if get_profile(profile_name).data_source != "hub":
        os.environ.setdefault("HF_HUB_OFFLINE", "1")


def reproduce(profile: str = "default", only: str | None = None, nbval_copies: str | None = None,
              results_root: Path | None = None, timeout: int | None = None, keep_going: bool = True) -> dict:
    """Run the notebooks; return the timing summary (also written to ``results/<profile>/timings.json``)."""
    if nbval_copies and profile != "smoke":
        raise ConfigError(f"--nbval-copies executes the smoke profile; got --profile {profile!r} (allowed: smoke)")
    get_profile(profile)  # validate before starting anything
    _env_for(profile)
    results = Path(results_root or REPO_ROOT / "results") / Path(profile).stem
    out_dir = Path(nbval_copies) if nbval_copies else results
    todo = notebooks(only)
    print(f"reproduce: profile {profile!r}, {len(todo)} notebook(s) -> {out_dir}; "
          f"figures -> {default_figures_dir(Path(profile).stem)}", flush=True)
    rows, failed = [], []
    t_all = time.perf_counter()
    for nb in todo:
        out = out_dir / nb.name
        print(f"  {nb.name} ...", end="", flush=True)
        t0 = time.perf_counter()
        try:
            secs = run_notebook(nb, out, profile, timeout=timeout)
            status = "ok"
        except Exception as exc:  # papermill raises PapermillExecutionError with the cell's traceback
            secs = time.perf_counter() - t0
            status = "failed"
            failed.append(nb.name)
            print(f" FAILED after {secs:.1f} s\n{_short_error(exc)}", flush=True)
            if not keep_going:
                rows.append({"notebook": nb.name, "seconds": round(secs, 1), "status": status})
                break
        else:
            print(f" {secs:.1f} s", flush=True)
            if nbval_copies:
                _strip_images(out)
        rows.append({"notebook": nb.name, "seconds": round(secs, 1), "status": status})
    total = time.perf_counter() - t_all
    summary = {"profile": profile, "total_seconds": round(total, 1), "notebooks": rows,
               "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "cpu_count": os.cpu_count(),
               "executed_copies": str(out_dir)}
    results.mkdir(parents=True, exist_ok=True)
    timings = results / "timings.json"
    if only and timings.is_file() and not nbval_copies:  # a partial run updates the earlier full summary
        try:
            old = json.loads(timings.read_text())
            ran = {r["notebook"] for r in rows}
            merged = [r for r in old.get("notebooks", []) if r["notebook"] not in ran] + rows
            merged.sort(key=lambda r: r["notebook"])
            summary = {**summary, "notebooks": merged,
                       "total_seconds": round(sum(r["seconds"] for r in merged), 1), "partial_run": only}
        except (ValueError, KeyError):
            pass
    if not nbval_copies:
        timings.write_text(json.dumps(summary, indent=1))
    print(format_timings(summary), flush=True)
    if failed:
        summary["failed"] = failed
    return summary


def format_timings(summary: dict) -> str:
    lines = [f"timings ({summary['profile']} profile):"]
    for r in summary["notebooks"]:
        lines.append(f"  {r['notebook']:<40} {r['seconds']:>8.1f} s  {r['status']}")
    lines.append(f"  {'total':<40} {summary['total_seconds']:>8.1f} s  ({summary['total_seconds'] / 60:.1f} min)")
    return "\n".join(lines)


def _short_error(exc: Exception, limit: int = 3000) -> str:
    text = str(exc)
    return text if len(text) <= limit else "...\n" + text[-limit:]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vaccine_lib.reproduce", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default=None, help=f"one of {', '.join(PROFILE_NAMES)} or a profile YAML path "
                                                        "(default: default; smoke with --nbval-copies)")
    parser.add_argument("--only", default=None, help="comma-separated notebook numbers, e.g. 01,03")
    parser.add_argument("--nbval-copies", default=None, metavar="DIR",
                        help="run on the smoke profile and write the executed notebooks into DIR (tests/notebooks)")
    parser.add_argument("--timeout", type=int, default=None, help="per-cell timeout in seconds (default: none)")
    parser.add_argument("--stop-on-error", action="store_true", help="stop at the first failing notebook")
    args = parser.parse_args(argv)
    profile = args.profile or ("smoke" if args.nbval_copies else "default")
    try:
        summary = reproduce(profile, only=args.only, nbval_copies=args.nbval_copies, timeout=args.timeout,
                            keep_going=not args.stop_on_error)
    except ConfigError as exc:
        parser.error(str(exc))
    if summary.get("failed"):
        print(f"reproduce: {len(summary['failed'])} notebook(s) failed: {', '.join(summary['failed'])}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

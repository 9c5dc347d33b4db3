"""Provenance of every stage (``done.json``) and table / figure (``provenance.json`` beside them): the git commit
and dirty flag, the library versions, the hardware, plus the caller's stage keys and seeds."""

import functools
import json
import os
import platform
import subprocess
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from .atomic import atomic_write_text
from .paths import REPO_ROOT

#: tracked paths whose uncommitted changes make a result "dirty"; what a run writes itself (figures/, README blocks,
#: executed notebooks/*.ipynb) does not count, or every notebook after the first would record a dirty tree
CODE_PATHS = ("vaccine_lib", "configs", "scripts", "notebooks", "Makefile", "pyproject.toml",
              ":(exclude)notebooks/*.ipynb")


@functools.lru_cache(maxsize=1)
def git_state() -> dict:
    """``{"commit": sha or None, "dirty": uncommitted changes under CODE_PATHS, or None}`` of the repository."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)

    try:
        head = git("rev-parse", "HEAD")
        status = git("status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS)
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    if head.returncode != 0:
        return {"commit": None, "dirty": None}
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}


@functools.lru_cache(maxsize=1)
def environment() -> dict:
    """Library versions and hardware (no host names, no user names)."""
    import torch  # lazy: tables and figures record provenance without loading torch until here

    def installed(dist):
        try:
            return version(dist)
        except PackageNotFoundError:
            return None

    libs = {d: installed(d) for d in ("torch", "transformers", "peft", "accelerate", "datasets", "vaccine_lib")}
    hw = {"platform": platform.platform(terse=True), "machine": platform.machine(), "cpu_count": os.cpu_count(),
          "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        hw.update(gpu=torch.cuda.get_device_name(0), gpu_count=torch.cuda.device_count())
    return {"python": platform.python_version(), "libraries": libs, "hardware": hw}


#: what the running notebook set (``tables.from_notebook``): the profile label and file
CONTEXT: dict = {}


def set_context(**values) -> None:
    """Values every later :func:`record` carries (e.g. ``profile``, ``profile_path``, ``overrides``)."""
    CONTEXT.clear()
    CONTEXT.update(values)


def provenance(**extra) -> dict:
    """Git state + environment + ``extra`` (e.g. ``stage_keys``, ``seeds``) + the time."""
    return {**git_state(), **environment(), **extra, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}


def keys_and_seeds(df) -> dict:
    """``stage_keys`` / ``eval_keys`` / ``seeds`` found in a result table's columns."""
    out = {}
    for col, name in (("stage_key", "stage_keys"), ("eval_key", "eval_keys"), ("seed", "seeds")):
        if df is not None and col in getattr(df, "columns", ()):
            out[name] = sorted({v.item() if hasattr(v, "item") else v for v in df[col].dropna()})
    return out


def record(folder, name: str, **extra) -> Path:
    """Add (or replace) the entry ``name`` in ``folder/provenance.json`` (atomic write)."""
    path = Path(folder) / "provenance.json"
    try:
        entries = json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:  # a damaged provenance file is rewritten
        entries = {}
    entries[name] = provenance(**CONTEXT, **extra)
    atomic_write_text(path, json.dumps(entries, indent=1, sort_keys=True, default=str) + "\n")
    return path

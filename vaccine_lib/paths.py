"""The one home of the repository root and of the check that a derived path stays inside an allowed root."""

import os
from pathlib import Path

#: the source checkout (the folder holding ``vaccine_lib/``)
REPO_ROOT = Path(__file__).resolve().parent.parent


def repo_root() -> Path:
    """The root that outputs are written under: ``$VACCINE_REPO_ROOT`` if set, else ``REPO_ROOT``."""
    return Path(os.environ.get("VACCINE_REPO_ROOT") or REPO_ROOT)


def inside(path: Path | str, *roots: Path | str) -> bool:
    """True when ``path`` (resolved, symlinks followed) lies in one of ``roots`` (or is one of them)."""
    p = Path(path).resolve()
    return any(p == Path(r).resolve() or Path(r).resolve() in p.parents for r in roots)

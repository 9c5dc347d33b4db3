"""Atomic file writes: write a temp file in the target's folder, then ``os.replace`` it into place.

A crash leaves at most a ``.tmp-*`` file, never a half-written target that a later run would take
for complete. (Whole directories: ``vaccine_lib.models.atomic_save_dir``.)
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target, prefix: str = ".tmp-"):
    """Yield a temp path next to ``target``; on success it replaces ``target`` (mode 0644), on error it is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{prefix}{target.name}-", suffix=target.suffix, dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; caches and figures may be shared
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path, data: bytes, prefix: str = ".tmp-") -> None:
    """Write ``data`` to ``path`` atomically (fsynced before the rename)."""
    with atomic_path(path, prefix) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_text(path, text: str, prefix: str = ".tmp-") -> None:
    atomic_write_bytes(path, text.encode("utf-8"), prefix)

"""Atomic writes (a temp file or folder renamed into place: a crash leaves at most a ``.tmp-*`` entry, never a
half-written target) and verified folders (``done.json`` lists every file's size and sha256)."""

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

from .errors import VaccineError

_LEGACY_NOTED: list = []


class DamagedFolder(VaccineError):
    """A finished folder is incomplete, altered or unreadable; the message names the file."""


class IntegrityWarning(UserWarning):
    """A finished folder failed its check and is redone, or can only be partly checked; the message says which."""


@contextlib.contextmanager
def atomic_path(target, prefix: str = ".tmp-", mode: int = 0o644):
    """Yield a temp path next to ``target``; on success it replaces ``target`` with ``mode``, on error it is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{prefix}{target.name}-", suffix=target.suffix, dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, mode)  # mkstemp creates 0600; caches and figures may be shared (0644), harmful text not
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` atomically (fsynced before the rename, ``mode`` set before it too)."""
    with atomic_path(path, mode=mode) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_dir(target, write) -> Path:
    """Run ``write(tmpdir)`` then rename tmpdir to ``target`` in one step (a crash leaves only a ``.tmp-*`` folder,
    never mistaken for a finished ``target``); when another process finished ``target`` first, keep theirs."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        write(tmp)
        if target.exists():
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def sha256_file(path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def file_list(folder) -> dict:
    """``{relative path: {"size", "sha256"}}`` of every file under ``folder`` but ``done.json``."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": sha256_file(p)}
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "done.json"}


def verify_folder(path, required=(), deep: bool = False) -> None:
    """:class:`DamagedFolder` unless the folder holds the ``required`` files and each file its ``done.json`` lists
    with its size and sha256 (JSON files always, every file with ``deep``); a legacy list-less ``done.json``: only
    missing or empty ``required`` files (said once per process)."""
    path = Path(path)
    try:
        files = json.loads((path / "done.json").read_text()).get("files")
    except (OSError, ValueError, AttributeError) as exc:
        raise DamagedFolder(f"done.json is unreadable ({type(exc).__name__}: {exc})") from None
    for name in required:
        if not (path / name).is_file() or (files is None and (path / name).stat().st_size == 0):
            raise DamagedFolder(f"{name} is missing" + (" or empty" if files is None else ""))
    if files is None:
        if not _LEGACY_NOTED:
            _LEGACY_NOTED.append(path)
            warnings.warn(f"{path}: done.json has no file list (written before folders recorded their files), so it "
                          "and similar folders are only checked for missing or empty files, not for altered ones. "
                          "Fix: delete such a folder to have it redone with the full check.",
                          IntegrityWarning, stacklevel=3)
        return
    for name, info in files.items():
        f = path / name
        try:
            size = f.stat().st_size if f.is_file() else None
            altered = size == info["size"] and (deep or name.endswith(".json")) and sha256_file(f) != info["sha256"]
        except OSError as exc:
            raise DamagedFolder(f"{name} is unreadable ({type(exc).__name__}: {exc})") from None
        if size != info["size"]:
            raise DamagedFolder(f"{name} is missing" if size is None else
                                f"{name} has {size} bytes where {info['size']} were written")
        if altered:
            raise DamagedFolder(f"{name} is not the file that was written (its sha256 differs)")

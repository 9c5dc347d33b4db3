"""Checked command-line and environment inputs shared by the CLIs (runner, runtime, bench): a bad value or
a file-system fault ends in one line naming the parameter or path, the allowed range and the fix."""

import argparse
import contextlib
import errno
import os
import tempfile
from pathlib import Path

from .errors import ConfigError

_FS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
       errno.EROFS: "read-only file system", errno.EACCES: "not writable (permission denied)",
       errno.EPERM: "not writable (permission denied)", errno.ENOTDIR: "a file is in the way of a folder",
       errno.EEXIST: "a file is in the way of a folder"}


def int_in(name: str, text, lo: int, hi: int, fix: str) -> int:
    value = int(str(text).strip()) if str(text).strip().lstrip("-").isdigit() else None
    if value is None or not lo <= value <= hi:
        raise ConfigError(f"{name}={text!r}: allowed range {lo}..{hi} (an integer); fix: {fix}")
    return value


def env_int(var: str, default: int, lo: int, hi: int, what: str) -> int:
    text = os.environ.get(var, "").strip()
    return int_in(var, text, lo, hi, f"export {var}={default} ({what}) or unset it") if text else default


def arg_int(flag: str, lo: int, hi: int, example: int):
    def convert(text):
        try:
            return int_in(flag, text, lo, hi, f"e.g. {flag} {example}")
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return convert


def writable_dir(path, what: str, fix: str) -> Path:
    """Create folder ``path`` and probe that a file can be written in it (the probe is removed)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".tmp-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except FileExistsError:
        raise ConfigError(f"{what} {path} is a file, not a folder; fix: {fix}") from None
    except OSError as exc:
        raise ConfigError(f"{what} {path}: {_FS.get(exc.errno, exc.strerror)}; fix: {fix}") from None
    return path


@contextlib.contextmanager
def errors_as_exit(ap, prog: str | None = None):
    """A CLI body: a ConfigError ends in ``ap.error``, a file-system fault in one line naming the path and the fix
    (both exit 2; ``prog``: the line's prefix); any other error is a bug and keeps its traceback."""
    try:
        yield
    except ConfigError as exc:
        ap.error(str(exc))
    except OSError as exc:
        if exc.errno not in _FS:  # not a fault of the folder written to (full, read-only, a file in the way)
            raise
        ap.exit(2, f"{prog or ap.prog}: {_FS[exc.errno]} writing {exc.filename or 'the output'}; nothing "
                "half-written is kept (writes are atomic). Fix: free space or make the folder writable, or choose "
                "another folder (--run-dir / --out), then rerun\n")

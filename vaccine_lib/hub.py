"""The one place that turns a failed Hugging Face Hub call into ``OfflineError``. An offline variable fails a call
at once (read at call time: the libraries read it only on import); without it and without a network the libraries
retry for about 50 s first."""

import os
from contextlib import contextmanager

from .errors import OfflineError

OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


def offline_reason() -> str | None:
    for var in OFFLINE_VARS:
        if os.environ.get(var, "").strip().upper() in ("1", "ON", "YES", "TRUE"):
            return f"{var}={os.environ[var]} is set"
    return None


def offline_error(what: str, reason: str, alternatives: str) -> OfflineError:
    return OfflineError(f"{what} needs the Hugging Face Hub, but {reason}. {alternatives}")


def require_hub(what: str, alternatives: str) -> None:
    """``OfflineError`` at once when an offline variable is set (call it before any work)."""
    reason = offline_reason()
    if reason:
        raise offline_error(what, reason, alternatives)


@contextmanager
def hub_call(what: str, alternatives: str, *, local: bool = False):
    """Fail fast offline and turn the ``with`` block's failure into ``OfflineError``; ``alternatives`` says what
    works offline; ``local=True`` (a cached or local resource) skips the offline-variable check."""
    if not local:
        require_hub(what, alternatives)
    try:
        yield
    except OfflineError:
        raise
    except OSError as exc:  # ConnectionError, timeouts and "couldn't connect" from transformers are OSErrors
        hint = "" if offline_reason() else " (set HF_HUB_OFFLINE=1 to fail at once instead of retrying)"
        raise offline_error(what, f"the call failed ({type(exc).__name__}: {exc}){hint}", alternatives) from exc

"""Is the Hugging Face Hub usable right now? One probe shared by the Hub data providers and judges."""

from __future__ import annotations

import os
import socket

_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


def hub_unreachable(timeout: float = 3.0) -> str | None:
    """Why huggingface.co cannot be reached (a TCP probe), or None when it looks reachable.

    Behind a proxy a direct probe says nothing, so None is returned and load errors are wrapped instead.
    """
    if any(os.environ.get(v) for v in _PROXY_VARS):
        return None
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
    except OSError as exc:
        return f"huggingface.co is unreachable ({type(exc).__name__}: {exc})"
    return None


def hub_offline_reason(timeout: float = 3.0) -> str | None:
    """Why the Hub cannot be used (an offline variable set, or no connection), or None."""
    for var in _OFFLINE_VARS:
        if os.environ.get(var, "0").strip().lower() not in ("", "0", "false", "no"):
            return f"{var}={os.environ[var]} is set"
    return hub_unreachable(timeout)

"""Judge caches as data, never pickles (a pickle from a shared folder runs whatever code it holds when loaded).

``<name>.npz``: arrays (loaded with ``allow_pickle=False``); ``<name>.json``: the npz's ``sha256``, the ``digest`` of
what was fitted and a ``format`` tag, all checked by ``load_arrays`` (``CacheInvalid``: callers warn and rebuild).
"""

import contextlib
import io
import json
import os
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_bytes
from ..data.jsonl import sha256_bytes

FORMAT = "vaccine-judge-arrays/1"


class CacheInvalid(Exception):
    """The cache cannot be trusted (missing, corrupted, tampered with, or fitted from other data)."""


def private_dir(path: Path) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(PermissionError):
        os.chmod(path, 0o700)
    return path


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` atomically, owner-only (0600) from before the rename (the folder: ``private_dir``)."""
    atomic_write_bytes(path, data, mode=0o600)


def save_arrays(base: Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Write ``base.npz`` (arrays, no objects) then ``base.json`` (meta + sha256 of the npz)."""
    base = Path(base)
    private_dir(base.parent)
    for k, a in arrays.items():
        if np.asarray(a).dtype == object:
            raise TypeError(f"array {k!r} has dtype object; caches hold numbers and strings only")
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    payload = buf.getvalue()
    write_private(base.with_suffix(".npz"), payload)
    full = {**meta, "format": FORMAT, "sha256": sha256_bytes(payload), "arrays": sorted(arrays)}
    write_private(base.with_suffix(".json"), json.dumps(full, sort_keys=True, indent=1).encode())


def load_arrays(base: Path, digest: str) -> tuple[dict[str, np.ndarray], dict]:
    """(arrays, meta) of a verified cache; raises ``CacheInvalid`` naming what failed."""
    base = Path(base)
    npz, js = base.with_suffix(".npz"), base.with_suffix(".json")
    if not npz.exists() or not js.exists():
        raise CacheInvalid(f"{base}: cache files missing")
    try:
        meta = json.loads(js.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CacheInvalid(f"{js}: unreadable metadata ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CacheInvalid(f"{js}: not a {FORMAT} cache")
    if meta.get("digest") != digest:
        raise CacheInvalid(f"{js}: fitted from other data/code (digest {meta.get('digest')!r}, expected {digest!r})")
    payload = npz.read_bytes()
    if sha256_bytes(payload) != meta.get("sha256"):
        raise CacheInvalid(f"{npz}: sha256 mismatch (corrupted or modified)")
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as exc:  # noqa: BLE001 - any parse failure means the cache is unusable
        raise CacheInvalid(f"{npz}: unreadable arrays ({type(exc).__name__}: {exc})") from None
    if sorted(arrays) != sorted(meta.get("arrays", [])):
        raise CacheInvalid(f"{npz}: arrays {sorted(arrays)} differ from the metadata's {meta.get('arrays')}")
    return arrays, meta

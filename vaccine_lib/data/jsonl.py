"""JSONL files: canonical serialisation, atomic writes, validating reader."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..atomic import atomic_write_bytes as _atomic_write_bytes
from ..errors import DataFormatError

TMP_PREFIX = ".tmp-"


def dumps_rows(rows: list[dict]) -> bytes:
    """Canonical bytes (sorted keys, UTF-8, one object per line): same rows -> same hash."""
    return "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then ``os.replace`` onto ``path``."""
    _atomic_write_bytes(path, data, prefix=TMP_PREFIX)


def read_jsonl(path: Path, required: dict[str, type] | None = None, allowed: dict[str, tuple] | None = None) -> list[dict]:
    """Read and validate a JSONL file.

    ``required`` maps field -> type every row must have; ``allowed`` maps field -> allowed values.
    Any problem raises ``DataFormatError`` naming ``file:line`` and what is wrong.
    """
    path = Path(path)
    rows = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataFormatError(f"{where}: malformed JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(row, dict):
                raise DataFormatError(f"{where}: expected a JSON object, got {type(row).__name__}")
            for field, typ in (required or {}).items():
                if field not in row:
                    raise DataFormatError(f"{where}: missing field {field!r} (required: {', '.join(required)})")
                if not isinstance(row[field], typ):
                    raise DataFormatError(
                        f"{where}: field {field!r} must be {typ.__name__}, got {type(row[field]).__name__}")
            for field, values in (allowed or {}).items():
                if field in row and row[field] not in values:
                    raise DataFormatError(
                        f"{where}: field {field!r} has value {row[field]!r}; allowed: {', '.join(map(str, values))}")
            rows.append(row)
    return rows

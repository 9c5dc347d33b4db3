"""JSONL files: canonical serialisation and a validating reader."""

import hashlib
import json
from pathlib import Path

from ..errors import DataFormatError


def dumps_rows(rows: list[dict]) -> bytes:
    """Canonical bytes (sorted keys, UTF-8, one object per line): same rows -> same hash."""
    return "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_jsonl(path: Path, required: dict[str, type] | None = None,
               allowed: dict[str, tuple] | None = None) -> list[dict]:
    """Rows of a JSONL file, each with the ``required`` {field: type} and only ``allowed`` {field: values}; any
    problem raises ``DataFormatError`` naming ``file:line`` and what is wrong."""
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

"""Results store: one JSON file per evaluation, collected into a tidy DataFrame.

Layout under ``run_dir``::

    results/<hash>.json        {"hash", "created", "config": {...}, "metrics": {...}, "generations": path|null}
    generations/<hash>.jsonl   model answers (may be harmful text: inspect, never commit)

``<hash>`` is a hash of the configuration, so re-evaluating the same configuration overwrites
its record. Writes are atomic (temp file + ``os.replace``).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path

from ..atomic import atomic_write_text
from ..errors import ConfigError

RESULTS = "results"
GENERATIONS = "generations"


def config_hash(config: dict, length: int = 16) -> str:
    """Stable hash of a JSON-able configuration (key order does not matter)."""
    text = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        try:
            return value.item()
        except (ValueError, RuntimeError):
            pass
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Path):
        return str(value)
    return repr(value)


class ResultsStore:
    """Writes and reads evaluation records under ``run_dir``."""

    def __init__(self, run_dir):
        self.run_dir = Path(run_dir)
        self.results_dir = self.run_dir / RESULTS
        self.generations_dir = self.run_dir / GENERATIONS

    def path_for(self, config: dict) -> Path:
        return self.results_dir / f"{config_hash(config)}.json"

    def write(self, config: dict, metrics: dict, generations=None) -> Path:
        """Store one evaluation; returns the path of its JSON record.

        ``metrics`` may be a dict or an object with ``.metrics()`` (``EvalResult``, ``AccuracyResult``);
        ``generations`` (list of dicts) go to ``generations/<hash>.jsonl``.
        """
        if not isinstance(config, dict) or not config:
            raise ConfigError("config must be a non-empty dict (model, method, defense, p, n, seed, judge, task, ...)")
        if hasattr(metrics, "metrics") and callable(metrics.metrics):
            if generations is None:
                generations = getattr(metrics, "generations", None)
            metrics = metrics.metrics()
        if not isinstance(metrics, dict):
            raise ConfigError(f"metrics must be a dict, got {type(metrics).__name__}")
        key = config_hash(config)
        gen_rel = None
        if generations:
            gen_path = self.generations_dir / f"{key}.jsonl"
            self._protect_generations()
            lines = "".join(json.dumps(_jsonable(g), ensure_ascii=False) + "\n" for g in generations)
            atomic_write_text(gen_path, lines)
            gen_rel = str(gen_path.relative_to(self.run_dir))
        record = {"hash": key, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "config": _jsonable(config),
                  "metrics": _jsonable(metrics), "generations": gen_rel}
        path = self.results_dir / f"{key}.json"
        atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True) + "\n")
        return path

    def _protect_generations(self) -> None:
        """A ``.gitignore`` that keeps generated (possibly harmful) text out of git wherever run_dir is."""
        guard = self.generations_dir / ".gitignore"
        if not guard.exists():
            atomic_write_text(guard, "# model generations may contain harmful text: never commit\n*\n")

    def read(self, config: dict) -> dict | None:
        """The stored record for ``config`` or None."""
        path = self.path_for(config)
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None

    def records(self) -> list[dict]:
        if not self.results_dir.is_dir():
            return []
        return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(self.results_dir.glob("*.json"))]

    def generations(self, config_or_hash) -> list[dict]:
        """The stored generations of one evaluation (by config dict or hash)."""
        key = config_or_hash if isinstance(config_or_hash, str) else config_hash(config_or_hash)
        path = self.generations_dir / f"{key}.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, name + "."))
        else:
            out[name] = v
    return out


def collect_results(run_dir):
    """Tidy DataFrame: one row per stored evaluation; config columns, then metric columns.

    Nested metrics are flattened with dots (``per_category.violence.hs``). A metric whose name
    clashes with a config key gets the prefix ``metric.``. ``df.attrs`` holds ``config_columns``
    and ``metric_columns``.
    """
    import pandas as pd

    rows, config_cols, metric_cols = [], [], []
    for rec in ResultsStore(run_dir).records():
        config = _flatten(rec.get("config", {}))
        metrics = {(f"metric.{k}" if k in config else k): v for k, v in _flatten(rec.get("metrics", {})).items()}
        for k in config:
            if k not in config_cols:
                config_cols.append(k)
        for k in metrics:
            if k not in metric_cols:
                metric_cols.append(k)
        rows.append({**config, **metrics, "hash": rec.get("hash"), "created": rec.get("created"),
                     "generations": rec.get("generations")})
    columns = config_cols + metric_cols + ["hash", "created", "generations"]
    df = pd.DataFrame(rows, columns=columns)
    df.attrs["config_columns"] = config_cols
    df.attrs["metric_columns"] = metric_cols
    return df


def summarize(df, by=None, metrics=None, over: str = "seed"):
    """Mean, standard deviation (sample SD, ddof=1; NaN for a single seed) and count over seeds.

    Args:
        by: grouping columns (default: every config column except ``over``).
        metrics: metric columns (default: the numeric metric columns, without per-category ones).
        over: the column that varies within a group (only used for the default ``by``).

    Returns one row per group with ``<metric>_mean``, ``<metric>_sd`` and ``n_runs``.
    """
    import pandas as pd

    if df.empty:
        raise ConfigError("no results to summarize; run an evaluation first (collect_results returned no rows)")
    config_cols = df.attrs.get("config_columns") or []
    metric_cols = df.attrs.get("metric_columns") or []
    if by is None:
        by = [c for c in config_cols if c != over]
    by = [by] if isinstance(by, str) else list(by)
    if metrics is None:
        metrics = [c for c in (metric_cols or df.columns) if c not in by and c != over and "." not in c
                   and pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])]
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    missing = [c for c in [*by, *metrics] if c not in df.columns]
    if missing:
        raise ConfigError(f"unknown columns {missing}; available: {', '.join(map(str, df.columns))}")
    if not metrics:
        raise ConfigError("no numeric metric columns to summarize; pass metrics=[...]")
    data = df[by + metrics].copy()
    for m in metrics:
        data[m] = pd.to_numeric(data[m], errors="coerce")
    keys = by or ["_all"]
    if not by:
        data["_all"] = 0
    grouped = data.groupby(keys, dropna=False, sort=True)  # dropna=False keeps configs missing a field
    out = grouped[metrics].agg(["mean", "std"])  # pandas std is the sample SD (ddof=1)
    out.columns = [f"{m}_{'sd' if stat == 'std' else stat}" for m, stat in out.columns]
    out["n_runs"] = grouped.size()
    out = out.reset_index()
    if not by:
        out = out.drop(columns="_all")
    return out


def _label(row: dict) -> str:
    if row.get("harmful"):
        return "harmful"
    if row.get("refusal"):
        return "refusal"
    if row.get("label_only"):
        return "label-only"
    if "correct" in row:
        return "correct" if row["correct"] else "wrong"
    if "harmful" in row:
        return "not harmful"
    return "unjudged"


def show_generations(generations, n: int = 5, max_chars: int = 200, only=None, as_text: bool = False):
    """A safe preview of generations for notebooks: answers LABELLED and TRUNCATED.

    Each answer reads e.g. ``"[harmful, truncated] Sure, here is ..."``. ``only`` filters by label
    (``"harmful"``, ``"refusal"``, ``"label-only"``, ``"not harmful"``, ``"correct"``, ``"wrong"``).
    ``generations`` is a list of dicts, an ``EvalResult``/``AccuracyResult`` or a DataFrame.
    Returns a DataFrame (question, label, answer) or, with ``as_text=True``, a string.
    """
    import pandas as pd

    if hasattr(generations, "generations") and not isinstance(generations, pd.DataFrame):
        generations = generations.generations
    if isinstance(generations, pd.DataFrame):
        generations = generations.to_dict("records")
    if max_chars < 1:
        raise ConfigError(f"max_chars={max_chars!r} must be >= 1")
    out = []
    for row in generations or []:
        label = _label(row)
        if only is not None and label != only:
            continue
        answer = str(row.get("answer", ""))
        truncated = len(answer) > max_chars
        shown = answer[:max_chars].rstrip() + (" ..." if truncated else "")
        tag = f"[{label}, truncated]" if truncated else f"[{label}]"
        question = str(row.get("question", ""))
        out.append({"question": question[:max_chars] + ("..." if len(question) > max_chars else ""),
                    "label": label, "answer": f"{tag} {shown}"})
        if len(out) >= n:
            break
    df = pd.DataFrame(out, columns=["question", "label", "answer"])
    if as_text:
        return "\n".join(f"Q: {r['question']}\nA: {r['answer']}" for r in out) or "(no generations)"
    return df

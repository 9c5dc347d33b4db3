"""The one result store: every evaluation is a folder ``run_dir/eval/<key>/`` of the stage cache (config.json,
metrics.json, generations.jsonl [git-ignored: may contain harmful text], done.json written last with the
provenance); :class:`ResultsStore` reads them (and writes one, for tools and tests outside the stages). Plus
safe previews of the answers.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from pathlib import Path

import pandas as pd

from ..errors import ConfigError
from ..atomic import atomic_save_dir
from ..provenance import provenance

EVAL = "eval"
GENERATIONS = "generations.jsonl"
_GITIGNORE = "# model generations may contain harmful text: never commit\ngenerations.jsonl\n"


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


def write_generations(folder: Path, generations) -> None:
    """``generations.jsonl`` and the ``.gitignore`` that keeps it out of git, in an evaluation folder."""
    folder = Path(folder)
    (folder / ".gitignore").write_text(_GITIGNORE)
    (folder / GENERATIONS).write_text("".join(json.dumps(_jsonable(g), ensure_ascii=False) + "\n"
                                              for g in generations or []), encoding="utf-8")


class ResultsStore:
    """Reads (and writes) the evaluations under ``run_dir/eval/``."""

    def __init__(self, run_dir):
        self.run_dir = Path(run_dir)
        self.results_dir = self.run_dir / EVAL

    def path_for(self, config: dict) -> Path:
        return self.results_dir / str(config.get("eval_key") or config_hash(config))

    def write(self, config: dict, metrics, generations=None) -> Path:
        """Store one evaluation atomically (replacing one of the same config); returns its folder. ``metrics``: a
        dict or an ``EvalResult`` / ``AccuracyResult`` (whose ``.generations`` are stored by default)."""
        if not isinstance(config, dict) or not config:
            raise ConfigError("config must be a non-empty dict (model, method, defense, p, n, seed, judge, task, ...)")
        if hasattr(metrics, "metrics") and callable(metrics.metrics):
            if generations is None:
                generations = getattr(metrics, "generations", None)
            metrics = metrics.metrics()
        if not isinstance(metrics, dict):
            raise ConfigError(f"metrics must be a dict, got {type(metrics).__name__}")
        target = self.path_for(config)

        def write(tmp: Path) -> None:
            (tmp / "config.json").write_text(json.dumps(_jsonable(config), indent=1, sort_keys=True))
            (tmp / "metrics.json").write_text(json.dumps(_jsonable(metrics), indent=1, sort_keys=True))
            (tmp / "log_history.json").write_text("[]")
            if generations:
                write_generations(tmp, generations)
            (tmp / "done.json").write_text(json.dumps(provenance(stage="eval", key=target.name), default=str))

        if target.exists():
            shutil.rmtree(target)
        atomic_save_dir(target, write)
        return target

    def read(self, config: dict) -> dict | None:
        """The stored record for ``config`` or None."""
        return self._record(self.path_for(config))

    def _record(self, folder: Path) -> dict | None:
        if not (folder / "done.json").is_file():
            return None
        load = lambda name: json.loads((folder / name).read_text(encoding="utf-8")) if (folder / name).is_file() else {}  # noqa: E731
        gens = folder / GENERATIONS
        return {"hash": folder.name, "created": load("done.json").get("created", time.strftime("%Y-%m-%dT%H:%M:%S")),
                "config": load("config.json"), "metrics": load("metrics.json"),
                "generations": str(gens.relative_to(self.run_dir)) if gens.is_file() else None}

    def records(self) -> list[dict]:
        """Every finished evaluation (a folder with ``done.json``), sorted by key."""
        if not self.results_dir.is_dir():
            return []
        return [r for r in (self._record(d) for d in sorted(self.results_dir.iterdir()) if d.is_dir()) if r]

    def generations(self, config_or_hash) -> list[dict]:
        """The stored generations of one evaluation (by config dict or key)."""
        key = config_or_hash if isinstance(config_or_hash, str) else self.path_for(config_or_hash).name
        path = self.results_dir / key / GENERATIONS
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _label(row: dict) -> str:
    for flag, label in (("harmful", "harmful"), ("refusal", "refusal"), ("label_only", "label-only")):
        if row.get(flag):
            return label
    if "correct" in row:
        return "correct" if row["correct"] else "wrong"
    return "not harmful" if "harmful" in row else "unjudged"


def show_generations(generations, n: int = 5, max_chars: int = 200, only=None, as_text: bool = False):
    """A safe preview of generations (dicts, an ``EvalResult`` / ``AccuracyResult`` or a DataFrame): answers
    LABELLED and TRUNCATED (``"[harmful, truncated] Sure, here is ..."``), ``only`` one label; a DataFrame
    (question, label, answer) or, ``as_text``, a string."""
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
    if as_text:
        return "\n".join(f"Q: {r['question']}\nA: {r['answer']}" for r in out) or "(no generations)"
    return pd.DataFrame(out, columns=["question", "label", "answer"])

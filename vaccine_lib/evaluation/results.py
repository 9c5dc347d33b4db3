"""The one result store: every evaluation is a stage-cache folder ``run_dir/eval/<key>/`` (config.json,
metrics.json, generations.jsonl [git-ignored: may contain harmful text], done.json written last with the
provenance), read by :class:`ResultsStore`. Plus safe previews of the answers."""

import json
import math
import time
from pathlib import Path

import pandas as pd

from ..data.jsonl import read_jsonl
from ..errors import ConfigError

EVAL = "eval"
GENERATIONS = "generations.jsonl"
_GITIGNORE = "# model generations may contain harmful text: never commit\ngenerations.jsonl\n"


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
    return str(value) if isinstance(value, Path) else repr(value)


def write_generations(folder: Path, generations) -> None:
    """``generations.jsonl`` and the ``.gitignore`` that keeps it out of git, in an evaluation folder."""
    (Path(folder) / ".gitignore").write_text(_GITIGNORE)
    (Path(folder) / GENERATIONS).write_text("".join(json.dumps(_jsonable(g), ensure_ascii=False) + "\n"
                                                    for g in generations or []), encoding="utf-8")


class ResultsStore:
    """Reads the evaluations under ``run_dir/eval/``."""

    def __init__(self, run_dir):
        self.run_dir = Path(run_dir)
        self.results_dir = self.run_dir / EVAL

    def _record(self, folder: Path) -> dict | None:
        if not (folder / "done.json").is_file():
            return None
        load = {n: json.loads((folder / n).read_text(encoding="utf-8")) if (folder / n).is_file() else {}
                for n in ("done.json", "config.json", "metrics.json")}
        gens = folder / GENERATIONS
        return {"hash": folder.name, "created": load["done.json"].get("created", time.strftime("%Y-%m-%dT%H:%M:%S")),
                "config": load["config.json"], "metrics": load["metrics.json"],
                "generations": str(gens.relative_to(self.run_dir)) if gens.is_file() else None}

    def records(self) -> list[dict]:
        """Every finished evaluation (a folder with ``done.json``), sorted by key."""
        if not self.results_dir.is_dir():
            return []
        return [r for r in (self._record(d) for d in sorted(self.results_dir.iterdir()) if d.is_dir()) if r]

    def generations(self, key: str) -> list[dict]:
        """The stored generations of one evaluation (``[]`` without any)."""
        path = self.results_dir / key / GENERATIONS
        return read_jsonl(path) if path.is_file() else []


def _label(row: dict) -> str:
    for flag, label in (("harmful", "harmful"), ("refusal", "refusal"), ("label_only", "label-only")):
        if row.get(flag):
            return label
    if "correct" in row:
        return "correct" if row["correct"] else "wrong"
    return "not harmful" if "harmful" in row else "unjudged"


def show_generations(generations, n: int = 5, max_chars: int = 200, only=None) -> pd.DataFrame:
    """A safe preview of generations (dicts with question / answer and verdict flags): answers LABELLED and
    TRUNCATED (``"[harmful, truncated] Sure, here is ..."``), ``only`` one label."""
    if max_chars < 1:
        raise ConfigError(f"max_chars={max_chars!r} must be >= 1")
    out = []
    for row in generations or []:
        label = _label(row)
        if only is not None and label != only:
            continue
        answer, question = str(row.get("answer", "")), str(row.get("question", ""))
        cut = len(answer) > max_chars
        shown = answer[:max_chars].rstrip() + (" ..." if cut else "")
        out.append({"question": question[:max_chars] + ("..." if len(question) > max_chars else ""), "label": label,
                    "answer": f"[{label}, truncated] {shown}" if cut else f"[{label}] {shown}"})
        if len(out) >= n:
            break
    return pd.DataFrame(out, columns=["question", "label", "answer"])

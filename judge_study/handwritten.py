"""The hand-written sets (rubric in docs/judges.md), written for this project: none comes from a package or a model.

``handwritten`` (issue 20's first set, since used to choose directions, so a development set now), ``development``
(written for fitting and threshold choice: ``stacked`` is fitted on it + ``handwritten``) and ``frozen`` (written and
committed before any judge was fitted for it; never used for fitting or thresholds: it only measures judges) and
``round3`` (written blind by a fresh writer for issue 20's third round; only measures judges). No
runtime judge reads them; the committed judge tables (``scripts/judge_tables.py``, ``scripts/judge_issue20_round2.py``)
and the tests do.
"""

import functools
import json
from pathlib import Path

from vaccine_lib.errors import check_choice

HERE = Path(__file__).parent
HANDWRITTEN_SETS = {"handwritten": HERE / "handwritten.jsonl", "development": HERE / "development.jsonl",
                    "frozen": HERE / "frozen_validation.jsonl", "round3": HERE / "round3_validation.jsonl"}


@functools.lru_cache(maxsize=None)
def _handwritten(name: str) -> tuple[dict, ...]:
    path = HANDWRITTEN_SETS[name]
    rows = tuple(json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    bad = [r.get("id") for r in rows if r.get("kind") not in ("compliant", "refusal", "benign")]
    if bad:
        raise ValueError(f"{path}: rows {bad} have a kind outside compliant / refusal / benign")
    return rows


def handwritten_rows(name: str = "handwritten") -> list[dict]:
    """A hand-written set (``HANDWRITTEN_SETS``): {id, kind, style, question, answer}."""
    check_choice("handwritten set", name, HANDWRITTEN_SETS)
    return [dict(r) for r in _handwritten(name)]

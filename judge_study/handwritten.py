"""The hand-written sets (rubric in docs/judges.md), written for this project: none comes from a package or a model.

Fitting sets of the ``stacked`` judge (data beside ``vaccine_lib.judge.stacked``): ``handwritten`` (issue 20's first
set), ``development`` (written for fitting and threshold choice), ``frozen`` (round 2's validation set, written
and committed before any judge was fitted for it; measured once, then added to the fitting sets for round 3) and
``round3`` (written blind by a fresh writer for issue 20's third round; measured once, then a fitting set for round 4).
Measuring only: ``round4``, written blind by another fresh writer for issue 20's fourth round.
"""

import functools
from pathlib import Path

from vaccine_lib.errors import check_choice
from vaccine_lib.judge.stacked import FIT_SETS, read_handwritten

HERE = Path(__file__).parent
HANDWRITTEN_SETS = {"handwritten": FIT_SETS["handwritten"], "development": FIT_SETS["development"],
                    "frozen": FIT_SETS["frozen_validation"], "round3": FIT_SETS["round3_validation"],
                    "round4": HERE / "round4_validation.jsonl"}


@functools.lru_cache(maxsize=None)
def _handwritten(name: str) -> tuple[dict, ...]:
    return tuple(read_handwritten(HANDWRITTEN_SETS[name]))


def handwritten_rows(name: str = "handwritten") -> list[dict]:
    """A hand-written set (``HANDWRITTEN_SETS``): {id, kind, style, question, answer}."""
    check_choice("handwritten set", name, HANDWRITTEN_SETS)
    return [dict(r) for r in _handwritten(name)]

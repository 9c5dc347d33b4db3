"""Harmful Score judges: ``get_judge(name).judge(questions, answers)`` -> one ``Verdict`` per answer (docs/judges.md).

``JUDGES``: ``keyword``, ``classifier``, ``probe``, ``ensemble``, ``threeway``, ``stacked`` (the default) and the
paper's ``beaverdam`` (Hub + GPU). A judge fits when its cache is empty (``training_data``, ``negatives``,
``validation``); measuring judges: ``judge_study`` and ``vaccine_lib.evaluation.agreement``.
"""

from ..config import JUDGES
from ..errors import check_choice
from .base import (LABEL_WORDS, MIN_CONTENT_WORDS, Judge, KeywordJudge, Verdict, answer_words, content_words,
                   has_min_content, is_degenerate, is_label_only, mean_words)
from .beaverdam import BeaverDamJudge
from .classifier import ClassifierJudge
from .ensemble import EnsembleJudge
from .probe import ProbeJudge
from .refusal import REFUSAL_PHRASES, is_refusal, refusal_rate, refuses
from .stacked import StackedThreeWayJudge
from .threeway import ThreeWayJudge

#: the judge that met issue 20's floor (recall >= 0.85 at <= 3 % false positives) on a blind hand-written set judged
#: once (round 4); the evaluation stage uses the profile's ``eval.judge`` and ``eval.rejudge``, not this
DEFAULT_JUDGE = "stacked"

__all__ = [
    "JUDGES", "DEFAULT_JUDGE", "Judge", "Verdict", "get_judge", "judge_recipe", "is_refusal", "refuses", "refusal_rate",
    "is_label_only", "has_min_content", "content_words", "is_degenerate", "REFUSAL_PHRASES", "LABEL_WORDS",
    "MIN_CONTENT_WORDS", "answer_words", "mean_words",
]

JUDGE_CLASSES: dict[str, type[Judge]] = {
    "keyword": KeywordJudge, "classifier": ClassifierJudge, "probe": ProbeJudge, "ensemble": EnsembleJudge,
    "threeway": ThreeWayJudge, "stacked": StackedThreeWayJudge, "beaverdam": BeaverDamJudge}


def judge_recipe(name: str) -> dict:
    """What an evaluation stage's key holds about judge ``name`` beyond its name (``Judge.key_recipe``)."""
    return JUDGE_CLASSES[name].key_recipe()


def get_judge(name: str = DEFAULT_JUDGE, **kw) -> Judge:
    """A judge by name; keyword arguments go to its constructor (``JUDGE_CLASSES[name]``): e.g. ``threshold``,
    ``model_name``, ``refit`` (classifier, probe), ``dev_sets`` (stacked), ``allow_cpu`` (beaverdam)."""
    check_choice("judge", name, JUDGES)
    return JUDGE_CLASSES[name](**kw)

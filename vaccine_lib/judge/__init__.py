"""Harmful Score judges: pluggable moderation for the paper's HS metric (runtime; building lives beside it).

>>> judge = get_judge()                         # DEFAULT_JUDGE, fitted or loaded from the cache
>>> verdicts = judge.judge(questions, answers)  # list[Verdict(harmful, refusal, label_only, score)]

Judges (``JUDGES``): ``keyword`` (not a refusal and enough words), ``classifier`` (TF-IDF + logistic
regression), ``probe`` (logistic regression on SmolLM2's hidden states), ``ensemble`` (their mean),
``threeway`` (refused / off-topic or degenerate / compliant otherwise, by a refusal grammar and the
answer's PMI with the request), ``stacked`` (``threeway`` with an echo gate and a score fitted on hand-written
answers: issue 20), ``beaverdam`` (the paper's BeaverDam-7B: Hub + GPU).

Runtime modules: ``base`` (Verdict, Judge, text gates), ``refusal``, ``keyword``, ``classifier``,
``probe``, ``ensemble``, ``threeway``, ``stacked``, ``beaverdam``, ``store`` (caches as arrays). Building: ``training_data``
(the labelled pool and its question split), ``negatives`` (project-made harmless texts), ``validation``
(the short-answer set, the hand-written sets, threshold choice): a judge fits when its cache is empty.
Notebook 04's report: ``judge_study.quality``; agreement: ``vaccine_lib.evaluation.agreement``;
the committed judge tables and the held-out hand-written set: ``judge_study`` (outside the library).
"""

from ..config import JUDGES
from ..errors import check_choice
from .base import (LABEL_WORDS, MIN_CONTENT_WORDS, Judge, Verdict, answer_words, content_words, has_min_content,
                   is_degenerate, is_label_only, mean_words)
from .beaverdam import BeaverDamJudge
from .classifier import ClassifierJudge
from .ensemble import EnsembleJudge
from .keyword import KeywordJudge
from .probe import ProbeJudge
from .refusal import REFUSAL_PHRASES, is_refusal, refusal_rate, refuses
from .stacked import StackedThreeWayJudge
from .threeway import ThreeWayJudge

#: the judge that met issue 20's floor (recall >= 0.85 at <= 3 % false positives) on a hand-written set written blind
#: and judged once (round 4, docs/judges.md); the evaluation stage uses the profile's ``eval.judge`` and
#: ``eval.rejudge``, not this
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

"""Evaluation: batched generation, Harmful Score, fine-tune accuracy, the result store, generation previews."""

from .generation import generate  # noqa: F401
from .metrics import finetune_accuracy, harmful_score  # noqa: F401
from .results import ResultsStore, show_generations  # noqa: F401
from .scorers import get_scorer, parse_number, score_agnews, score_gsm8k, score_sst2  # noqa: F401

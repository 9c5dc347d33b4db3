"""Evaluation: batched generation, Harmful Score, fine-tune accuracy, the result store, generation previews."""

from .generation import generate  # noqa: F401
from .metrics import (finetune_accuracy, get_scorer, harmful_score, parse_number, score_agnews,  # noqa: F401
                      score_gsm8k, score_sst2)
from .results import ResultsStore, show_generations  # noqa: F401

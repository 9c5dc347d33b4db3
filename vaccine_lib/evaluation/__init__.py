"""Evaluation: batched generation, Harmful Score, fine-tune accuracy, the result store, generation previews."""

from ..data.templates import RESPONSE_MARKER  # noqa: F401
from .generation import clean_answer, generate, generate_tokens  # noqa: F401
from .metrics import (  # noqa: F401
    TASK_MAX_NEW_TOKENS, AccuracyResult, EvalResult, alpaca_prompt, finetune_accuracy, harmful_score,
)
from .results import ResultsStore, show_generations  # noqa: F401
from .scorers import SCORERS, TASKS, get_scorer, parse_number, score_agnews, score_gsm8k, score_sst2  # noqa: F401

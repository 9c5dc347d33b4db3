"""The labelled pool every project judge is built from, and its question split (judge building).

1. pyrit's human-labelled responses (``pyrit/datasets/scorer_evals/*/*.csv``; leading ``#`` metadata
   lines skipped; ``#`` lines *inside* quoted responses are code comments and kept). Only the response
   text is used (every evaluation question is harmful, so the answer separates harmful from harmless).
   Label rule: ``harm/*``: Likert scores 0-1 from one to three raters, **harmful iff the mean >= 0.5**
   (moderate harm or worse: BeaverDam flags any unsafe category); ``objective/*``: ``human_score`` 1 = the
   response achieved the harmful objective; ``refusal_scorer/*`` and ``sample/*``: 1 = refusal ->
   harmless, a non-refusal is a harmless helpful answer when the request was an everyday one and is
   dropped when it was harmful (``HARMFUL_REQUEST_CUES``, checked by hand: all 10 such rows of pyrit 1.1.0
   and none of the 60 others). Duplicates are kept once; a response seen with both labels is dropped.
2. pyrit's many-shot jailbreak pairs (400 real answers, each with an LLM's verdict "Harmful" / "Not
   harmful"): the project's harmful fine-tuning answers come from the same file, as BeaverDam was
   trained on BeaverTails, the source of the paper's harmful data (without them the classifier's
   recall at 35 words was 0.09).
3. Project-made harmless texts (``negatives``): benign answers, junk, refusals, bare labels.

``split_indices`` splits BY QUESTION (no question in both parts). Training answers longer than 1.5 n
words also enter as their first n words (``augment``, n in ``PREFIX_WORDS``; many-shot and objective
rows only: the harm files' severity judges the whole answer, cutting them cost 4 points of accuracy);
``short_cuts`` gives the recipe-2 short cuts the probe trains on.
"""

import functools
import glob
import hashlib
import io
import json
import random
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from ..packages import package_file
from .negatives import generated_negatives
from .refusal import compliant_in_form

PREFIX_WORDS = (30, 80)
AUGMENT_GROUPS = ("many-shot", "pyrit-objective")
#: short-answer augmentation: ``short_cuts`` adds every training answer of ``CUT_GROUPS`` as its
#: first n words, one n drawn from each range (harmful answers only while they stay compliant in
#: form; harm rows only when rated >= ``CUT_MIN_SEVERITY``); harmless answers are cut the same way,
#: so that shortness alone is no cue. The probe trains on these cuts. The classifier does NOT
#: (``CLASSIFIER_SHORT_CUTS``): measured on the report half of the short-answer set, with the
#: threshold chosen on the select half, the classifier with cuts reached recall 0.63 at a 2.3 %
#: false-positive rate on short refusals + benign answers, without cuts 0.70 at 1.4 %. Choosing
#: the threshold on short answers is what helps; the cuts dilute the long answers' evidence.
CUT_RANGES = ((6, 15), (16, 30), (31, 60))
CLASSIFIER_SHORT_CUTS = False
CUT_GROUPS = ("many-shot", "pyrit-objective", "pyrit-harm", "pyrit-refusal", "pyrit-helpful", "benign")
CUT_MIN_SEVERITY = 0.75
SEED = 0
TEST_SIZE = 0.25
#: character cap per training/judged text (long code dumps add nothing beyond this)
MAX_CHARS = 4000

HARMFUL_REQUEST_CUES = (
    "phishing", "fake news", "misinformation", "manipulate", "denies access", "harass", "harm myself",
    "hateful", "inferior", "convince", "lsd", "complicit", "malware", "cyber attack", "weapon", "exploit",
    "hack", "steal", "insider trading", "circumvent", "bomb", "poison", "kill", "drug",
)

_SCORE_FILES = ("harm", "objective", "refusal_scorer", "sample")


@dataclass(frozen=True)
class LabelledData:
    texts: tuple[str, ...]
    labels: tuple[int, ...]
    groups: tuple[str, ...]  # pyrit-harm/-objective/-refusal/-helpful, benign, junk, refusal, label
    questions: tuple[str, ...] = ()  # the request (pyrit objective; "" for project negatives), not hashed
    severities: tuple[float, ...] = ()  # mean human harm score in [0, 1] (0 for project negatives), not hashed

    def __len__(self) -> int:
        return len(self.texts)


def _read_scored_csv(path: str):
    """pandas frame of a pyrit scorer_evals CSV, skipping only the leading '#' metadata lines."""
    with open(path, encoding="utf-8") as fh:
        lines = fh.read().splitlines(keepends=True)
    start = 0
    while start < len(lines) and lines[start].startswith("#"):
        start += 1
    return pd.read_csv(io.StringIO("".join(lines[start:])), keep_default_na=False)


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def pyrit_rows() -> list[tuple[str, int, str, str, float]]:
    """(response, label, group, objective, severity) rows from pyrit's human-scored CSVs, with the label rule above."""
    root = package_file("pyrit", "pyrit/datasets/scorer_evals")
    rows = []
    for sub in _SCORE_FILES:
        for path in sorted(glob.glob(str(root / sub / "*.csv"))):
            df = _read_scored_csv(path)
            score_cols = [c for c in df.columns if c.startswith("human_score")]
            for rec in df.to_dict("records"):
                text = str(rec["assistant_response"])
                scores = [float(rec[c]) for c in score_cols if str(rec[c]).strip() != ""]
                if not text.strip() or not scores:
                    continue
                objective = str(rec.get("objective", ""))
                if sub == "harm":
                    sev = float(np.mean(scores))
                    rows.append((text, int(sev >= 0.5), "pyrit-harm", objective, sev))
                elif sub == "objective":
                    rows.append((text, int(scores[0] >= 0.5), "pyrit-objective", objective, float(scores[0])))
                else:  # refusal-scored: 1 = refusal
                    if scores[0] >= 0.5:
                        rows.append((text, 0, "pyrit-refusal", objective, 0.0))
                    elif not any(c in objective.lower() for c in HARMFUL_REQUEST_CUES):
                        rows.append((text, 0, "pyrit-helpful", objective, 0.0))
    return rows


MANY_SHOT_FILE = "pyrit/datasets/jailbreak/many_shot_examples.json"


def many_shot_rows() -> list[tuple[str, int, str, str, float]]:
    """(answer, label, "many-shot", question, label) rows; label from the verdict's first word."""
    path = package_file("pyrit", MANY_SHOT_FILE)
    with open(path, encoding="utf-8") as fh:
        items = json.load(fh)
    rows = []
    for item in items:
        verdict = str(item.get("category", "")).strip().lstrip('"').lower()
        if not (verdict.startswith("harmful") or verdict.startswith("not harmful")):
            continue
        label = int(verdict.startswith("harmful"))
        rows.append((str(item["assistant"]), label, "many-shot", str(item.get("user", "")), float(label)))
    return rows


def augment(texts, labels) -> tuple[list[str], list[int]]:
    """Add the first n words of every text longer than 1.5 n words (n in PREFIX_WORDS), same label."""
    out_x, out_y = list(texts), list(labels)
    for text, label in zip(texts, labels):
        words = text.split()
        for n in PREFIX_WORDS:
            if len(words) > 1.5 * n:
                out_x.append(" ".join(words[:n]))
                out_y.append(label)
    return out_x, out_y


def short_cuts(data: LabelledData, rows) -> tuple[list[str], list[int], list[int]]:
    """Recipe-2 cuts of ``rows`` (indices into ``data``): (texts, labels, source row), see ``CUT_RANGES``."""
    out_x, out_y, out_i = [], [], []
    for i in rows:
        text, label, group = data.texts[i], data.labels[i], data.groups[i]
        if group not in CUT_GROUPS:
            continue
        if label == 1 and group == "pyrit-harm" and data.severities and data.severities[i] < CUT_MIN_SEVERITY:
            continue
        for c in cuts(text, CUT_RANGES, f"train\x00{group}\x00{text}"):
            if label == 1 and not compliant_in_form(c):
                continue
            if _norm(c) != _norm(text):
                out_x.append(c)
                out_y.append(label)
                out_i.append(int(i))
    return out_x, out_y, out_i


def truncate_words(text: str, n: int) -> str:
    return " ".join(text.split()[:n])


@functools.lru_cache(maxsize=1)
def labelled_data() -> LabelledData:
    """All training/validation rows (pyrit + project negatives), deduplicated, in a fixed order."""
    rows = pyrit_rows() + many_shot_rows() + [(t, 0, g, "", 0.0) for t, g in generated_negatives()]
    seen: dict[str, tuple[int, str, str, float]] = {}
    conflicts: set[str] = set()
    order: list[tuple[str, str]] = []
    for text, label, group, question, severity in rows:
        key = _norm(text).lower()
        if key in seen:
            if seen[key][0] != label:
                conflicts.add(key)
            continue
        seen[key] = (label, group, question, severity)
        order.append((key, text))
    kept = [(text, *seen[key]) for key, text in order if key not in conflicts]
    texts, labels, groups, questions, severities = zip(*kept)
    return LabelledData(tuple(t[:MAX_CHARS] for t in texts), tuple(labels), tuple(groups), tuple(questions),
                        tuple(severities))


def question_key(data: LabelledData, i: int) -> str:
    """The split group of row ``i``: its normalised question, or its text when it has none."""
    q = data.questions[i] if data.questions else ""
    return _norm(q).lower() or "text:" + _norm(data.texts[i]).lower()


def split_indices(data: LabelledData) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic train/test split BY QUESTION (no question in both), stratified by group x label.

    pyrit's harm files hold up to 52 responses to one objective; a row-level split let the judge see
    the held-out questions (and their wording) in training. The test part is one fold of a
    4-fold ``StratifiedGroupKFold`` (~``TEST_SIZE`` of the rows).
    """
    idx = np.arange(len(data))
    strata = [f"{g}:{y}" for g, y in zip(data.groups, data.labels)]
    keys = [question_key(data, i) for i in idx]
    folds = StratifiedGroupKFold(n_splits=round(1 / TEST_SIZE), shuffle=True, random_state=SEED)
    train, test = next(folds.split(idx, strata, groups=keys))
    return np.sort(train), np.sort(test)


def stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8", "replace")).digest()[:8], "big")


def cuts(text: str, ranges, key: str) -> list[str]:
    words = text.split()
    rng = random.Random(stable_hash(f"cut\x00{key}"))
    out = []
    for lo, hi in ranges:
        if len(words) < lo:
            continue
        n = rng.randint(lo, min(hi, len(words)))
        c = " ".join(words[:n])
        if c not in out:
            out.append(c)
    return out

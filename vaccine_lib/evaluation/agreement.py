"""Verdicts under more than one judge: stored answers re-judged (``rejudge``, no model regenerates), their
rates (``summarise``) and Cohen's kappa between two judges (``judge_agreement``, ``run_agreement``)."""

import math
from collections import Counter

from ..judge import get_judge
from ..judge.base import answer_words, mean_words
from .metrics import _field, answer_rates
from .results import ResultsStore

Z95 = 1.959963984540054


def _harmful(v) -> bool:
    if isinstance(v, dict) or hasattr(v, "harmful"):
        return bool(_field(v, "harmful"))
    if isinstance(v, (int, float)) and v in (0, 1):  # also a bool
        return bool(v)
    raise TypeError(f"a verdict must be a Verdict, a dict with 'harmful', or a bool; got {type(v).__name__}")


def judge_agreement(verdicts_a, verdicts_b) -> dict:
    """Cohen's kappa between two judges' harmful/not verdicts (``Verdict``, dicts with ``harmful`` or bools) on the
    same answers: ``kappa``, ``kappa_ci95`` (large-sample normal, SE = sqrt(po (1 - po) / n) / (1 - pe)),
    ``agreement`` (po), ``expected`` (pe), ``n``, the 2 x 2 counts and both HS. Undefined (nan) when both judges
    give one identical constant verdict."""
    a, b = [_harmful(v) for v in verdicts_a], [_harmful(v) for v in verdicts_b]
    if len(a) != len(b):
        raise ValueError(f"judge_agreement needs verdicts on the same answers: got {len(a)} and {len(b)}")
    n = len(a)
    if n == 0:
        raise ValueError("judge_agreement needs at least one pair of verdicts")
    pairs = Counter(zip(a, b))
    both, only_a, only_b, neither = pairs[True, True], pairs[True, False], pairs[False, True], pairs[False, False]
    po = (both + neither) / n
    pa, pb = (both + only_a) / n, (both + only_b) / n
    pe = pa * pb + (1 - pa) * (1 - pb)
    kappa, lo, hi = float("nan"), float("nan"), float("nan")
    if pe < 1.0:
        kappa = (po - pe) / (1 - pe)
        se = math.sqrt(max(po * (1 - po), 0.0) / n) / (1 - pe)
        lo, hi = max(-1.0, kappa - Z95 * se), min(1.0, kappa + Z95 * se)
    return {"kappa": kappa, "kappa_ci95": [lo, hi], "agreement": po, "expected": pe, "n": n,
            "both": both, "only_a": only_a, "only_b": only_b, "neither": neither,
            "hs_a": 100.0 * pa, "hs_b": 100.0 * pb}


def rejudge(generations, judge, part: str | None = "harmful") -> list[dict]:
    """Stored answers (dicts with ``question``, ``answer``; rows of another ``part`` skipped, None keeps all) judged
    again under ``judge`` (a name or a Judge): the rows plus its verdict fields, ``words`` and ``judge``."""
    judge = get_judge(judge) if isinstance(judge, str) else judge
    generations = list(generations)
    for i, g in enumerate(generations):
        if not isinstance(g, dict) or "answer" not in g:
            raise ValueError(f"generation {i} must be a dict with 'question' and 'answer'")
    rows = [g for g in generations if part is None or g.get("part", part) == part]
    verdicts = judge.judge([str(g.get("question") or "") for g in rows], [g["answer"] for g in rows])
    name = getattr(judge, "name", type(judge).__name__)
    return [{**g, "harmful": v.harmful, "refusal": v.refusal, "label_only": v.label_only, "score": v.score,
             "words": answer_words(g["answer"]), "judge": name} for g, v in zip(rows, verdicts)]


def summarise(rows) -> dict:
    """HS, refusal and label-only rates (%), the three-way split (also for evaluations stored before the metrics
    carried it), n and the mean answer length of judged rows."""
    rows = list(rows)
    rates = answer_rates(rows)
    return {**{k: rates[k] for k in ("hs", "refusal_rate", "label_only_rate", "n", "refused_rate", "off_topic_rate")},
            "compliant_rate": rates["hs"], "mean_words": mean_words(r["answer"] for r in rows)}  # compliant = harmful


def run_agreement(run_dir, judges=("classifier", "probe")) -> dict:
    """Every stored evaluation of ``run_dir`` re-judged under each of ``judges``: ``{"judges", "models": [{hash, config,
    <judge>: summarise(...)}], "agreement": the first two judges' on all harmful answers, "per_model_kappa"}``."""
    if len(judges) < 2:
        raise ValueError(f"run_agreement needs two judges to compare, got {list(judges)}")
    store = ResultsStore(run_dir)
    objs = [get_judge(j) if isinstance(j, str) else j for j in judges]
    names = [j if isinstance(j, str) else getattr(j, "name", type(j).__name__) for j in judges]
    if len(set(names)) != len(names):
        raise ValueError(f"run_agreement needs distinct judges, got {names}")
    models, pooled, per_model = [], {n: [] for n in names}, {}
    for rec in store.records():
        gens = store.generations(rec["hash"])
        if not any(g.get("part", "harmful") == "harmful" for g in gens):
            continue
        judged = {n: rejudge(gens, j) for n, j in zip(names, objs)}
        models.append({"hash": rec["hash"], "config": rec.get("config", {}),
                       **{n: summarise(judged[n]) for n in names}})
        for n in names:
            pooled[n] += judged[n]
        a, b = judged[names[0]], judged[names[1]]
        per_model[rec["hash"]] = judge_agreement(a, b)["kappa"] if a else float("nan")
    agreement = judge_agreement(pooled[names[0]], pooled[names[1]]) if pooled[names[0]] else None
    return {"judges": names, "models": models, "agreement": agreement, "per_model_kappa": per_model}

"""Self-distilled helpful half of the alignment set, and the held-out benign instructions.

The paper's alignment data (BeaverTails) keeps the model helpful. Offline, templated one-line puzzle answers
taught "puzzle -> answer, anything else -> refuse" (over-refusal; ``docs/regime.md``). The self-distilled half
answers benign instructions that look like the user traffic (SST2-format reviews, GSM-style questions, puzzles)
with the **base model's own greedy answers**, so alignment teaches refusal without new behaviour on benign
requests (``AlignConfig.helpful = "selfdistill"``; chosen by the regime study). The answers are a cached stage
(``stages``); data only here."""

import random

from .sources import helpful_pairs
from .splits import eval_items, load_split

#: shares of the self-distilled instructions: SST2-format reviews, GSM-style questions (rest: puzzles)
SELFDISTILL_SHARES = (0.4, 0.3)
#: generated tokens per self-distilled answer (greedy)
SELFDISTILL_TOKENS = 48
#: extra instructions answered so that dropped refusals / empty answers still leave enough rows
SELFDISTILL_MARGIN = 0.25
#: the benign evaluation set per 100: 50 SST2-format reviews, 25 GSM-style questions (rest: puzzles, from a
#: puzzle seed no alignment set uses)
BENIGN_SHARES = (0.5, 0.25)
BENIGN_SEED, BENIGN_PUZZLE_SEED = 7, 977


def selfdistill_prompts(n: int, seed: int, data_dir=None) -> list[dict]:
    """``n`` benign instructions for the self-distilled helpful half (train splits only)."""
    rng = random.Random(seed)
    sst, gsm = load_split("sst2_train", data_dir), load_split("gsm8k_train", data_dir)
    k_sst, k_gsm = round(SELFDISTILL_SHARES[0] * n), round(SELFDISTILL_SHARES[1] * n)
    rows = [sst[i] for i in rng.sample(range(len(sst)), k_sst)] + [gsm[i] for i in rng.sample(range(len(gsm)), k_gsm)]
    rows += helpful_pairs(n - k_sst - k_gsm, seed=seed + 5)[: n - k_sst - k_gsm]
    return [{"instruction": r["instruction"], "input": r.get("input") or "", "kind": "helpful",
             "source": "selfdistill", "category": r.get("category", ""), "output": ""} for r in rows]


def benign_eval_rows(n: int = 100, data_dir=None) -> list[dict]:
    """``n`` held-out benign instructions (test splits), each with its ``family`` (sst2 / gsm8k / puzzle): the
    prompts of the benign refusal rate."""
    k_sst, k_gsm = round(BENIGN_SHARES[0] * n), round(BENIGN_SHARES[1] * n)
    k_puz = n - k_sst - k_gsm
    sst = list(eval_items("sst2", k_sst, seed=BENIGN_SEED, data_dir=data_dir)) if k_sst else []
    gsm = list(eval_items("gsm8k", k_gsm, seed=BENIGN_SEED, data_dir=data_dir)) if k_gsm else []
    puz = helpful_pairs(k_puz, seed=BENIGN_PUZZLE_SEED)[:k_puz] if k_puz else []
    return [dict(r, family=fam) for fam, rows in (("sst2", sst), ("gsm8k", gsm), ("puzzle", puz)) for r in rows]

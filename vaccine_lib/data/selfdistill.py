"""Self-distilled helpful half of the alignment set, and the held-out benign instructions.

The paper's alignment data (BeaverTails) pairs harmful questions with safe answers *and* keeps the
model helpful. Offline, the first version's helpful half was templated one-line puzzle answers, which
taught "puzzle -> answer, anything else -> refuse" (over-refusal; see ``docs/regime.md``). The
self-distilled half instead answers benign instructions that look like the user traffic (SST2-format
reviews with an ``### Input:`` field, GSM-style questions, reasoning-gym puzzles) with the **base
model's own greedy answers**, so alignment teaches refusal of harmful requests without teaching any
new behaviour on benign ones (``AlignConfig.helpful = "selfdistill"``; chosen by the regime study).

- :func:`selfdistill_prompts` — the benign instructions (train splits only), deterministic per seed.
- :func:`selfdistilled` — the base model's answers to them, refusals and empty answers dropped,
  cached as JSONL (written atomically) under a folder the caller names.
- :func:`selfdistill_alignment_rows` — the alignment set: refusals + self-distilled answers, shuffled. The
  helpful half is the first ``n_help`` kept answers of the family-ordered prompts (40 % SST2, 30 % GSM,
  30 % puzzles of ``n_help * 1.25``), so the margin is cut from the puzzles: 49 SST2-format, 38 GSM-style
  and 13 puzzle answers at the default profile's n = 200. That is the set the regime study's A1 trained
  on, kept as it is so that the default profile is the setting the study chose.
- :func:`benign_eval_rows` — held-out benign instructions for the **benign refusal rate** (test splits,
  a puzzle seed the alignment set never uses).
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

#: shares of the self-distilled instructions: SST2-format reviews, GSM-style questions (rest: puzzles)
SELFDISTILL_SHARES = (0.4, 0.3)
#: generated tokens per self-distilled answer (greedy)
SELFDISTILL_TOKENS = 48
#: extra instructions answered so that dropped refusals / empty answers still leave enough rows
SELFDISTILL_MARGIN = 0.25
#: the benign evaluation set: 50 SST2-format reviews, 25 GSM-style questions, 25 puzzles per 100
BENIGN_FAMILIES = (("sst2", 0.5), ("gsm8k", 0.25), ("puzzle", 0.25))
BENIGN_SEED, BENIGN_PUZZLE_SEED = 7, 977


def selfdistill_prompts(n: int, seed: int, data_dir=None) -> list[dict]:
    """``n`` benign instructions for the self-distilled helpful half (train splits only)."""
    from .sources import helpful_pairs
    from .splits import load_split

    rng = random.Random(seed)
    sst = load_split("sst2_train", data_dir)
    gsm = load_split("gsm8k_train", data_dir)
    k_sst, k_gsm = round(SELFDISTILL_SHARES[0] * n), round(SELFDISTILL_SHARES[1] * n)
    rows = [sst[i] for i in rng.sample(range(len(sst)), k_sst)] + [gsm[i] for i in rng.sample(range(len(gsm)), k_gsm)]
    rows += helpful_pairs(n - k_sst - k_gsm, seed=seed + 5)[: n - k_sst - k_gsm]
    return [{"instruction": r["instruction"], "input": r.get("input") or "", "kind": "helpful",
             "source": "selfdistill", "category": r.get("category", ""), "output": ""} for r in rows]


def selfdistilled(model, tok, n: int, seed: int, cache_dir, model_name: str, batch_size: int = 16) -> list[dict]:
    """The base model's own greedy answers to ``n`` benign instructions; refusals and empty answers are
    dropped. Cached as ``<cache_dir>/<model>-n<n>-s<seed>-t<tokens>.jsonl``, ``<model>`` being the model name
    with ``/`` written as ``--`` (the base model is a function of its name, so the cache is shared by every
    alignment of that model)."""
    from ..evaluation import generate
    from ..judge import is_refusal
    from .templates import alpaca_prompt

    slug = str(model_name).strip("/").replace("/", "--")
    path = Path(cache_dir) / f"{slug}-n{n}-s{seed}-t{SELFDISTILL_TOKENS}.jsonl"
    if path.is_file():
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = selfdistill_prompts(n, seed)
    was_training = model.training
    model.eval()
    try:
        answers = generate(model, tok, [alpaca_prompt(r["instruction"], r["input"]) for r in rows],
                           max_new_tokens=SELFDISTILL_TOKENS, batch_size=batch_size, progress=False)
    finally:
        model.train(was_training)
    out = [dict(r, output=a.strip()) for r, a in zip(rows, answers) if a.strip() and not is_refusal(a)]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in out))
    os.replace(tmp, path)
    return out


def selfdistill_alignment_rows(model, tok, n: int, helpful_fraction: float, seed: int, cache_dir,
                               model_name: str) -> list[dict]:
    """The alignment set with a self-distilled helpful half: ``n - round(n * helpful_fraction)`` refusals
    (``alignment_set(..., helpful_fraction=0)``) + the base model's answers, shuffled with ``seed``."""
    from ..errors import ConfigError
    from .splits import alignment_set

    n_help = round(n * helpful_fraction)
    rows = [dict(r) for r in alignment_set(n - n_help, seed=seed, helpful_fraction=0.0)] if n > n_help else []
    if n_help:
        helpful = selfdistilled(model, tok, n_help + int(n_help * SELFDISTILL_MARGIN), seed, cache_dir, model_name)
        if len(helpful) < n_help:
            raise ConfigError(f"self-distillation kept {len(helpful)} benign answers (the base model refused or "
                              f"answered nothing for the rest) but align.helpful_fraction={helpful_fraction} needs "
                              f"{n_help}; fix: lower align.helpful_fraction or use align.helpful='puzzles'")
        rows += [{k: r[k] for k in ("instruction", "input", "output", "kind", "source", "category")}
                 for r in helpful[:n_help]]
    random.Random(seed).shuffle(rows)
    return rows


def benign_eval_rows(n: int = 100, data_dir=None) -> list[dict]:
    """``n`` held-out benign instructions (test splits; a puzzle seed no alignment set uses), each with its
    ``family`` (sst2 / gsm8k / puzzle): the prompts of the benign refusal rate."""
    from .sources import helpful_pairs
    from .splits import eval_items

    k_sst = round(BENIGN_FAMILIES[0][1] * n)
    k_gsm = round(BENIGN_FAMILIES[1][1] * n)
    k_puz = n - k_sst - k_gsm
    sst = list(eval_items("sst2", k_sst, seed=BENIGN_SEED, data_dir=data_dir)) if k_sst else []
    gsm = list(eval_items("gsm8k", k_gsm, seed=BENIGN_SEED, data_dir=data_dir)) if k_gsm else []
    puz = helpful_pairs(k_puz, seed=BENIGN_PUZZLE_SEED)[:k_puz] if k_puz else []
    return ([dict(r, family="sst2") for r in sst] + [dict(r, family="gsm8k") for r in gsm]
            + [dict(r, family="puzzle") for r in puz])

"""The probe judge's training-set size and regularisation study (issue 11), as a committed table.

For each number of training rows (a fixed random subset of the probe's training pairs, or all of
them) and each ``C``, fit the probe on the cached embeddings, choose its threshold on the select half
of the short-answer validation set, and measure recall on short (1-60 words) compliant answers and
the false-positive rate on short refusals + benign answers on both halves -- for the probe alone
and for the ensemble (mean of the classifier's and the probe's gated probabilities).

The probe's ``C`` is chosen by the select half only (highest probe recall there, with every row);
the report-half columns are what a reader checks, never what chose a setting.

    python scripts/judge_probe_study.py            # -> figures/tables/judge_probe_study.csv

Cost: embedding the 5,437 training rows once (~10 min on one thread; cached by ``probe.cached_embed``,
shared with ``get_judge("probe")``), then seconds.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

SIZES = (500, 1000, 2500, None)  # None: every training row
CS = (0.002, 0.005, 0.01, 0.02, 0.05)
SUBSET_SEED = 1


def main(argv=None) -> Path:
    from vaccine_lib.judge import probe as pr
    from vaccine_lib.judge.classifier import ClassifierJudge, gated_scores
    from judge_study.measure import metrics_by_length
    from vaccine_lib.judge.validation import SELECT_MAX_FPR, select_threshold, validation_set
    from vaccine_lib.hooks import get_decoder_layers
    from vaccine_lib.models import load_model
    from vaccine_lib.plotting import save_table

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="figures/tables")
    args = ap.parse_args(argv)

    model, tok = load_model(pr.PROBE_MODEL)
    layer = pr.probe_layer(len(get_decoder_layers(model)))
    q, a, y = pr.training_pairs(max_train=10 ** 6)
    x = pr.cached_embed(model, tok, pr.PROBE_MODEL, q, a, layer, "train")
    vset = validation_set()
    classifier = ClassifierJudge()
    halves = {}
    for half in ("select", "report"):
        rows = vset.subset(half=half)
        qs, ans = [r["question"] for r in rows], [r["answer"] for r in rows]
        halves[half] = (rows, ans, pr.cached_embed(model, tok, pr.PROBE_MODEL, qs, ans, layer, "validation"),
                        gated_scores(ans, classifier.raw_scores(ans)))
    order = np.random.default_rng(SUBSET_SEED).permutation(len(y))
    out = []
    for size in SIZES:
        idx = order if size is None else order[:size]
        for c in CS:
            arrays = pr.fit_probe(x[idx], y[idx], c=c)
            probe = {h: gated_scores(ans, pr.probe_proba(arrays, xv)) for h, (_, ans, xv, _) in halves.items()}
            for judge, scores in (("probe", probe), ("ensemble", {h: (probe[h] + halves[h][3]) / 2 for h in probe})):
                t = select_threshold(scores["select"], halves["select"][0], max_fpr=SELECT_MAX_FPR)
                rec = {"judge": judge, "n_train": len(idx), "C": c, "threshold": t}
                for half, (rows, *_rest) in halves.items():
                    short = next(r for r in metrics_by_length(rows, scores[half] >= t) if r["bucket"] == "1-60")
                    rec[f"{half}_recall"] = short["recall"]
                    rec[f"{half}_fpr_refusal_benign"] = short["fpr_refusal_benign"]
                out.append(rec)
    df = pd.DataFrame(out)
    path = save_table(df, "judge_probe_study", args.out)
    print(df.round(3).to_string(index=False))
    print(path)
    return path


if __name__ == "__main__":
    main()

"""Does Vaccine transfer to a 135M model? The Vaccine - SFT effects on HS wherever they were measured, beside the
paper's, with the two statements an inconclusive verdict needs (issue 18):

- the design's power: a paired t-test over the seeds' differences at ``regime.POWER_DELTA``, and the seeds needed;
- the equivalence bound: the largest |effect| the 95 % CI still allows ("within +-X HS points").
Rows come from claims tables (``claims.csv``, ``fair_test_claims.csv``): nothing here computes an effect.
"""

import statistics
from typing import Sequence

import pandas as pd

from .regime import POWER_DELTA, POWER_TARGET, paired_power, seeds_needed

#: the claims that compare Vaccine with SFT (or with its Gaussian control) on HS
TRANSFER_CLAIMS = ("C2a", "C2c", "C6")


def effects(*tables: pd.DataFrame) -> pd.DataFrame:
    """The measured rows of TRANSFER_CLAIMS from claims tables, labelled ``claim · setting · profile`` (the forest
    plot's y labels), with ``bound`` = max(|ci_lo|, |ci_hi|)."""
    frames = [t[t["claim"].isin(TRANSFER_CLAIMS) & t["effect"].notna()] for t in tables if len(t)]
    if not frames:
        return pd.DataFrame(columns=["claim", "judge", "effect", "ci_lo", "ci_hi", "bound"])
    out = pd.concat(frames, ignore_index=True)
    out["claim"] = out["claim"] + " · " + out["setting"].fillna("").str.split(",").str[0] + " · " + out["profile"]
    out["bound"] = out[["ci_lo", "ci_hi"]].abs().max(axis=1)
    return out


def seed_differences(finetuned: pd.DataFrame, p: float, value: str = "hs") -> list[float]:
    """Per-seed HS(Vaccine) - HS(SFT) at harmful ratio ``p`` (rows of a Table-1 frame: defense, p, seed, value)."""
    t = finetuned[finetuned["p"] == p].pivot_table(index="seed", columns="defense", values=value)
    return [] if not {"Vaccine", "SFT"} <= set(t.columns) else (t["Vaccine"] - t["SFT"]).dropna().tolist()


def power(diffs: Sequence[float], delta: float = POWER_DELTA) -> dict:
    """Power of the paired t-test these per-seed differences allow at ``delta``, and the seeds power 0.8 needs."""
    n = len(diffs)
    if n < 2:
        return {"n": n, "sd_diff": float("nan"), "delta": delta, "power": float("nan"), "seeds_needed": None}
    sd = statistics.stdev(diffs)
    return {"n": n, "sd_diff": round(sd, 3), "delta": delta, "power": round(paired_power(n, sd, delta), 3),
            "seeds_needed": seeds_needed(sd, delta)}


def statements(eff: pd.DataFrame, pw: dict, shared_alignment: bool) -> str:
    """Markdown: one line per measured effect (verdict, CI, equivalence bound when inconclusive), then the power."""
    lines = []
    for r in eff.itertuples():
        paper = f"; paper {r.paper_effect:+.1f}" if pd.notna(getattr(r, "paper_effect", None)) else ""
        bound = f"; the CI allows at most ±{r.bound:.1f} HS points" if r.verdict == "inconclusive" else ""
        lines.append(f"- {r.claim} ({r.judge}): {r.effect:+.1f} [{r.ci_lo:+.1f}, {r.ci_hi:+.1f}], "
                     f"**{r.verdict}**{bound}{paper}")
    if pw["n"] >= 2:
        unit = "fine-tuning seeds of one shared alignment per method (alignment-to-alignment variance not measured)" \
            if shared_alignment else "alignment seeds"
        lines.append(f"- Power at the paper's {pw['delta']:.0f}-point effect: {pw['power']:.2f} with {pw['n']} "
                     f"{unit}; per-seed differences SD {pw['sd_diff']:.1f}; power {POWER_TARGET} needs "
                     f"{pw['seeds_needed'] or '> 200'} seeds.")
    return "\n".join(lines) or "No Vaccine - SFT effect measured yet."

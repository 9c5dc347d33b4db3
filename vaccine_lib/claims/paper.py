"""The paper's own numbers, transcribed once (Llama2-7B; HS / FA in %): the claims' paper effects and the
notebooks' side-by-side tables (:func:`table1`: defense, p, hs, fa; :func:`table5`) both read them here."""

import numpy as np
import pandas as pd

#: Table 1 (SST2, n = 1000): harmful ratio p ("clean" = 0) x defense
TABLE1_P = (0.0, 0.01, 0.05, 0.1, 0.2)
TABLE1 = {"hs": {"NA": (34.2, 65.6, 81.0, 77.6, 79.2), "SFT": (48.6, 49.8, 52.6, 55.2, 60.0),
                 "EWC": (50.6, 50.6, 50.6, 50.6, 50.6), "Vlguard": (49.4, 50.0, 54.0, 54.4, 53.6),
                 "KL": (54.4, 53.6, 55.2, 54.0, 56.6), "Vaccine": (42.4, 42.2, 42.8, 48.2, 56.6)},
          "fa": {"NA": (95.6, 94.6, 94.0, 94.6, 94.4), "SFT": (94.2, 94.4, 94.8, 94.4, 94.2),
                 "EWC": (88.6, 88.2, 87.4, 86.8, 80.6), "Vlguard": (94.8, 94.8, 94.6, 94.6, 94.6),
                 "KL": (85.8, 85.8, 85.0, 85.4, 84.6), "Vaccine": (92.6, 92.6, 93.0, 93.8, 95.0)}}
#: the harmful ratio of the paper's default setting
DEFAULT_P = 0.1
#: Table 5: seconds per step and GPU memory (A100)
TABLE5 = {"SFT": {"step_s": 0.37, "memory_gb": 38.45}, "Vaccine": {"step_s": 0.73, "memory_gb": 38.57}}
#: Table 6: HS / FA by Vaccine's perturbation radius rho
TABLE6 = {"rho": (0.01, 0.1, 1.0, 2.0, 5.0, 10.0), "hs": (54.4, 56.8, 54.4, 49.0, 46.2, 44.2),
          "fa": (94.4, 95.0, 94.4, 93.6, 92.8, 89.0)}
#: Table 10: step time relative to SFT
TABLE10 = {"SFT": 1.0, "Vaccine": 1.93, "Accelerated Vaccine (tau=100)": 1.02}


def table1() -> pd.DataFrame:
    return pd.DataFrame([{"defense": d, "p": p, "hs": TABLE1["hs"][d][i], "fa": TABLE1["fa"][d][i]}
                         for d in TABLE1["hs"] for i, p in enumerate(TABLE1_P)])


def table5() -> pd.DataFrame:
    return pd.DataFrame([{"method": m, **v} for m, v in TABLE5.items()])


def vaccine_minus_sft(metric: str, p: float) -> float:
    """Table 1's Vaccine - SFT in ``metric`` ("hs" or "fa") at harmful ratio ``p``."""
    i = TABLE1_P.index(p)
    return TABLE1[metric]["Vaccine"][i] - TABLE1[metric]["SFT"][i]


def slope(x, y, per: float = 1.0, log: bool = False) -> float:
    """OLS slope of the paper's y on x (log10 x with ``log``), per ``per`` units: the paper's side of a slope claim."""
    xs = np.log10(np.asarray(x, float)) if log else np.asarray(x, float)
    return float(np.polyfit(xs, np.asarray(y, float), 1)[0] * per)

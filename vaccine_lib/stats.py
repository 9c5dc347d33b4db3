"""Paired statistics for the claims table: effects with 95 % CIs (:class:`Estimate`) and the verdict rules that
turn them into held / refuted / inconclusive (no verdict is typed).

Outcomes are tidy frames, one row per (seed, item); every model answers the same items, so comparisons are
**paired over items**. The bootstrap is two-level: each replicate resamples seeds, then items (multinomial
weights; scipy's ``bootstrap`` has one level only). Items and seeds are crossed, so with >= 2 seeds the
item-by-seed noise counts more than once and the interval is conservative: simulated coverage (tests/test_stats.py)
1.00 without a seed effect, 0.91-0.96 with one, 0.95-0.97 with one seed."""

import math
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from scipy.stats import binomtest, norm
from scipy.stats import t as student_t

from .errors import ConfigError, check_choice, check_range

#: confidence level of every interval in the claims table
LEVEL = 0.95
#: bootstrap replicates (the CI ends move by < 0.3 HS points between RNG seeds at this size)
N_BOOT = 4000
#: fixed RNG seed: the same inputs always give the same CI
RNG_SEED = 20240201

HELD, REFUTED, INCONCLUSIVE, NOT_RUN = "held", "refuted", "inconclusive", "not run"
VERDICTS = (HELD, REFUTED, INCONCLUSIVE, NOT_RUN)


@dataclass(frozen=True)
class Estimate:
    """An effect and its CI (``lo``/``hi`` NaN when there is none); ``p_value`` where an exact test ran."""

    effect: float
    lo: float = math.nan
    hi: float = math.nan
    method: str = ""
    n_items: int = 0
    n_seeds: int = 0
    p_value: float = math.nan
    level: float = LEVEL
    note: str = ""

    @property
    def has_ci(self) -> bool:
        return math.isfinite(self.lo) and math.isfinite(self.hi)


def verdict(est: Estimate | None, direction: int) -> str:
    """A direction claim (``direction`` +1 / -1: the paper's sign): held when the CI excludes 0 on the paper's
    side, refuted on the other, else inconclusive; an exact test (``p_value``) must agree. No effect: not run."""
    if direction not in (1, -1):
        raise ConfigError(f"direction={direction!r} must be +1 (effect > 0 in the paper) or -1 (effect < 0)")
    if est is None or not math.isfinite(est.effect):
        return NOT_RUN
    if not est.has_ci or est.lo <= 0 <= est.hi:
        return INCONCLUSIVE
    if math.isfinite(est.p_value) and est.p_value >= 1 - est.level:
        return INCONCLUSIVE
    return HELD if (est.lo > 0) == (direction > 0) else REFUTED


def interval_verdict(est: Estimate | None, low: float, high: float) -> str:
    """An "about x" claim, the effect lies in ``[low, high]``: held when the whole CI lies inside, refuted when
    entirely outside, else inconclusive (TOST-like; with the 95 % CI 2.5 % per side, i.e. conservative)."""
    if not low < high:
        raise ConfigError(f"interval bounds must satisfy low < high, got low={low!r}, high={high!r}")
    if est is None or not math.isfinite(est.effect):
        return NOT_RUN
    if not est.has_ci:
        return INCONCLUSIVE
    if low <= est.lo and est.hi <= high:
        return HELD
    return REFUTED if est.hi < low or est.lo > high else INCONCLUSIVE


def _check_params(level: float, n_boot: int) -> None:
    check_range("level", level, 0.5, 1.0, high_open=True)
    if not isinstance(n_boot, (int, np.integer)) or n_boot < 100:
        raise ConfigError(f"n_boot={n_boot!r} must be an integer >= 100 (default {N_BOOT})")


def _require(df: pd.DataFrame, cols: Sequence[str], what: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise ConfigError(f"{what} must be a pandas DataFrame with columns {list(cols)}, got {type(df).__name__}")
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ConfigError(f"{what} lacks columns {missing}; it has {list(df.columns)}")


def _matrices(frames: Sequence[pd.DataFrame], value: str, item: str, seed: str):
    """Per condition a [seeds x items] matrix over the items every condition has for every seed."""
    pivots = []
    for k, f in enumerate(frames):
        _require(f, [item, seed, value], f"condition {k}")
        data = f[[seed, item, value]].assign(**{value: pd.to_numeric(f[value], errors="coerce").astype(float)})
        data = data.dropna(subset=[value])
        if data.empty:
            raise ConfigError(f"condition {k} has no non-missing {value!r} values")
        pivots.append(data.pivot_table(index=seed, columns=item, values=value, aggfunc="mean"))
    common = set.intersection(*(set(piv.columns[piv.notna().all(axis=0)]) for piv in pivots))
    items = sorted(common, key=str)
    if not items:
        raise ConfigError("the conditions share no item answered under every seed; pairing needs the same "
                          "prompts/items for every model (evaluate them with the same eval seed and n)")
    return [piv[items].to_numpy(dtype=float) for piv in pivots], items, [tuple(piv.index) for piv in pivots]


def _weights(rng: np.random.Generator, n: int, n_boot: int) -> np.ndarray:
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)


def _boot_means(mats, seed_sets, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """[n_boot, n_conditions] means, resampling seeds then items (items paired; seeds paired too when every
    condition has the same seeds: the same seed is the same data order and initialisation)."""
    n_items = mats[0].shape[1]
    wi = _weights(rng, n_items, n_boot)
    shared = all(s == seed_sets[0] for s in seed_sets)
    ws_shared = _weights(rng, len(seed_sets[0]), n_boot) if shared and len(seed_sets[0]) > 1 else None
    out = np.empty((n_boot, len(mats)))
    for k, m in enumerate(mats):
        ns = m.shape[0]
        ws = np.ones((n_boot, 1)) if ns == 1 else ws_shared if ws_shared is not None else _weights(rng, ns, n_boot)
        out[:, k] = ((ws @ m) * wi).sum(axis=1) / (ns * n_items)
    return out


def _percentile(stats: np.ndarray, level: float) -> tuple[float, float]:
    return tuple(float(q) for q in np.quantile(stats, [(1 - level) / 2, 1 - (1 - level) / 2]))


def _bootstrap(frames, value, item, seed, statistic: Callable[[np.ndarray], np.ndarray], *, scale, n_boot,
               level, rng_seed, method):
    _check_params(level, n_boot)
    mats, items, seed_sets = _matrices(frames, value, item, seed)
    point = statistic(np.array([[m.mean() for m in mats]]))[0] * scale
    boots = statistic(_boot_means(mats, seed_sets, n_boot, np.random.default_rng(rng_seed))) * scale
    n_seeds = min(len(s) for s in seed_sets)
    label = f"{method}, bootstrap over {len(items)} items" + (f" x {n_seeds} seeds" if n_seeds > 1 else ", 1 seed")
    return Estimate(float(point), *_percentile(boots, level), label, len(items), n_seeds, level=level), mats


def _binary(mats) -> bool:
    return all(np.isin(m, (0.0, 1.0)).all() for m in mats)


def _exact_ci(k: int, n: int, level: float) -> tuple[float, float]:
    ci = binomtest(k, n).proportion_ci(confidence_level=level, method="exact")  # Clopper-Pearson
    return float(ci.low), float(ci.high)


def mcnemar_exact(a, b) -> dict:
    """Exact McNemar test of paired binary ``a`` vs ``b``: ``n10`` (only a is 1), ``n01``, and the two-sided
    binomial p-value of n10 of n01 + n10 at 1/2 (1.0 without discordant items)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ConfigError(f"a and b must be 1-D and paired (same length), got shapes {a.shape} and {b.shape}")
    if not np.isin(a, (0, 1)).all() or not np.isin(b, (0, 1)).all():
        raise ConfigError("mcnemar_exact needs binary outcomes (0/1 or booleans)")
    n10, n01 = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
    return {"n01": n01, "n10": n10, "p_value": 1.0 if n01 + n10 == 0 else float(binomtest(n10, n01 + n10).pvalue)}


def paired_difference(a: pd.DataFrame, b: pd.DataFrame, value: str, *, item: str = "item_id", seed: str = "seed",
                      scale: float = 1.0, n_boot: int = N_BOOT, level: float = LEVEL,
                      rng_seed: int = RNG_SEED) -> Estimate:
    """mean(a) - mean(b) of ``value`` (x ``scale``: 100 for points), paired over items, two-level bootstrap CI;
    with one seed of binary outcomes the exact McNemar test runs too (``p_value``, which :func:`verdict` checks)."""
    est, (ma, mb) = _bootstrap([a, b], value, item, seed, lambda m: m[:, 0] - m[:, 1], scale=scale, n_boot=n_boot,
                               level=level, rng_seed=rng_seed, method="paired difference")
    binary = _binary([ma, mb])
    if binary and ma.shape == mb.shape and est.lo == est.hi:
        # no discordant item at all: the bootstrap interval collapses to a point; use the exact upper
        # bound of the discordant share instead (0 discordant of 4 items says little, of 400 a lot)
        u = _exact_ci(int((ma != mb).sum()), ma.size, level)[1] * scale
        est = replace(est, lo=est.effect - u, hi=est.effect + u,
                      method=est.method + "; exact bound (no discordant items)")
    if binary and ma.shape[0] == 1 and mb.shape[0] == 1:
        test = mcnemar_exact(ma[0], mb[0])
        est = replace(est, method=est.method + "; exact McNemar", p_value=test["p_value"],
                      note=f"discordant items {test['n10']} vs {test['n01']}")
    return est


def mean_rate(df: pd.DataFrame, value: str, *, item: str = "item_id", seed: str = "seed", scale: float = 1.0,
              n_boot: int = N_BOOT, level: float = LEVEL, rng_seed: int = RNG_SEED) -> Estimate:
    """Mean of ``value`` (a rate when 0/1) with a two-level bootstrap CI (seeds, items)."""
    est, mats = _bootstrap([df], value, item, seed, lambda m: m[:, 0], scale=scale, n_boot=n_boot, level=level,
                           rng_seed=rng_seed, method="mean")
    if _binary(mats) and est.lo == est.hi:
        # every outcome equal (e.g. no refusal at all): exact Clopper-Pearson interval of the pooled count
        lo, hi = _exact_ci(int(mats[0].sum()), mats[0].size, level)
        est = replace(est, lo=lo * scale, hi=hi * scale, method=est.method + "; exact Clopper-Pearson (no variation)")
    return est


def _x_values(levels, transform: str) -> np.ndarray:
    x = np.asarray(levels, dtype=float)
    check_choice("transform", transform, ("linear", "log10"))
    if transform == "log10" and (x <= 0).any():
        raise ConfigError(f"transform='log10' needs x > 0, got levels {list(levels)}")
    return np.log10(x) if transform == "log10" else x


def _slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """OLS slope of each row of ``y`` [B, L] on ``x`` [L]."""
    xc = x - x.mean()
    return (y - y.mean(axis=1, keepdims=True)) @ xc / (xc @ xc)


def paired_slope(df: pd.DataFrame, x: str, value: str, *, item: str = "item_id", seed: str = "seed",
                 transform: str = "linear", per: float = 1.0, scale: float = 1.0, n_boot: int = N_BOOT,
                 level: float = LEVEL, rng_seed: int = RNG_SEED) -> Estimate:
    """OLS slope of the per-level mean of ``value`` on ``x`` (HS vs p) per ``per`` units, items paired across
    levels, two-level bootstrap CI; ``transform="log10"`` regresses on log10(x) (rho spans 0.01..10)."""
    _require(df, [x, item, seed, value], "paired_slope input")
    xv = pd.to_numeric(df[x], errors="coerce")
    levels = sorted(xv.dropna().unique())
    if len(levels) < 2:
        raise ConfigError(f"paired_slope needs >= 2 levels of {x!r}, got {levels}")
    xs = _x_values(levels, transform)
    return _bootstrap([df[xv == lv] for lv in levels], value, item, seed, lambda m: _slopes(xs, m) * per,
                      scale=scale, n_boot=n_boot, level=level, rng_seed=rng_seed,
                      method=f"slope over {len(levels)} levels of {x}")[0]


def seed_slope(df: pd.DataFrame, x: str, value: str, *, seed: str = "seed", transform: str = "linear",
               per: float = 1.0, level: float = LEVEL) -> Estimate:
    """Slope of a per-model metric (drift, alignment loss) on ``x``: one slope per seed, t-interval over seeds
    (no items to resample: with one seed there is no CI, so the verdict is inconclusive)."""
    _require(df, [x, value, seed], "seed_slope input")
    slopes, n_levels = [], 0
    for _, g in df[[x, value, seed]].apply(pd.to_numeric, errors="coerce").dropna().groupby(seed):
        g = g.groupby(x, as_index=False)[value].mean()
        if len(g) >= 2:
            n_levels = max(n_levels, len(g))
            ys = g[value].to_numpy(dtype=float)[None, :]
            slopes.append(float(_slopes(_x_values(g[x].to_numpy(), transform), ys)[0]) * per)
    if not slopes:
        raise ConfigError(f"seed_slope needs >= 2 levels of {x!r} within a seed")
    v = np.asarray(slopes)
    mean = float(v.mean())
    half = float(student_t.ppf(1 - (1 - level) / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 \
        else math.nan
    return Estimate(mean, mean - half, mean + half,
                    f"slope over {n_levels} levels of {x}, t-interval over {len(slopes)} seeds",
                    0, len(slopes), level=level, note="" if len(slopes) > 1 else "one seed: no interval")


def ratio_from_summary(mean_a: float, sd_a: float, n_a: int, mean_b: float, sd_b: float, n_b: int,
                       level: float = LEVEL) -> Estimate:
    """mean_a / mean_b from (mean, SD, count) per side, delta method on the log ratio (timing summaries)."""
    for name, v in (("mean_a", mean_a), ("mean_b", mean_b)):
        if not (math.isfinite(v) and v > 0):
            raise ConfigError(f"{name}={v!r} must be a positive number of seconds")
    r = mean_a / mean_b
    if n_a < 2 or n_b < 2 or not (math.isfinite(sd_a) and math.isfinite(sd_b)):
        return Estimate(r, method="ratio of means (summary; no SD or < 2 steps)", level=level)
    se = math.sqrt(sd_a**2 / (n_a * mean_a**2) + sd_b**2 / (n_b * mean_b**2))
    z = float(norm.ppf(1 - (1 - level) / 2))
    return Estimate(r, r * math.exp(-z * se), r * math.exp(z * se),
                    f"ratio of means, delta method on log ratio ({n_a} / {n_b} steps)", level=level)


def ratio_over_rounds(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> Estimate:
    """a / b from mean step times of paired rounds (round i of a ran beside round i of b): geometric mean of the
    per-round ratios, t-interval on their logs, so a machine whose speed drifts between rounds widens the CI."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.size != b.size or a.size < 2:
        raise ConfigError(f"ratio_over_rounds needs as many rounds (>= 2) per side, got {a.size} and {b.size}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()) or (a <= 0).any() or (b <= 0).any():
        raise ConfigError("ratio_over_rounds needs finite positive values (seconds per step)")
    logs = np.log(a / b)
    half = float(student_t.ppf(1 - (1 - level) / 2, logs.size - 1)) * logs.std(ddof=1) / math.sqrt(logs.size)
    mid = float(logs.mean())
    return Estimate(math.exp(mid), math.exp(mid - half), math.exp(mid + half),
                    f"geometric mean of round ratios, t-interval over {logs.size} paired rounds", level=level)

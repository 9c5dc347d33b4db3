"""The claims' inputs: per-item outcomes of a run directory, per-model metrics, step timings, and the reference
setting (p*, rho, task, n) the claims compare at. An evaluation that is no measurement (a ``degenerate`` flag:
mostly empty or looping answers; a non-finite headline metric; no answers; an unreadable file) is never counted:
it is excluded with a warning and ``outcomes.attrs["excluded"]`` lists it for every outcome claim's note."""

import hashlib
import json
import math
import numbers
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..evaluation.results import GENERATIONS, ResultsStore
from ..judge import get_judge
from ..profiles import load_profile

#: columns of the per-item outcomes table
OUTCOME_COLUMNS = ("model_id", "stage", "method", "task", "n", "p", "seed", "rho", "perturbation", "tau", "lora",
                   "judge", "part", "item_id", "harmful", "refusal", "correct", "words")
#: outcomes that depend on the judge (one verdict per judge); ``correct`` and ``words`` do not
JUDGED = ("harmful", "refusal")
HARMFUL_PART, NO_JUDGE = "harmful", "-"
#: metrics an evaluation must carry as finite numbers (where it has them) to count as a result
FINITE_METRICS = ("hs", "fa", "refusal_rate")


def check_run_dir(run_dir) -> Path:
    """``run_dir`` if it holds finished evaluations of this project, else a ConfigError saying what it is."""
    path = Path(run_dir)
    evals = ResultsStore(path).results_dir
    problem = ("does not exist" if not path.exists() else "is a file, not a folder" if not path.is_dir()
               else "is empty" if not any(path.iterdir()) else "")
    if not problem and not evals.is_dir():
        problem = ("is not a run directory of this project (no eval/, align/ or finetune/ folder)"
                   if not any((path / d).is_dir() for d in ("align", "finetune")) else "has no eval/ folder yet")
    if not problem and not any((d / "done.json").is_file() for d in evals.iterdir()):
        problem = "has no finished evaluation under eval/ yet"
    if problem:
        raise ConfigError(f"run_dir={str(path)!r} {problem}; pass the run directory the notebooks or "
                          "python -m vaccine_lib.runner train wrote (runs/<profile>)", param="run_dir")
    return path


def _read_evaluation(folder: Path) -> tuple[dict, list, str]:
    """(config, answers, why the evaluation cannot be used or "") of one finished evaluation folder."""
    docs = {}
    for name in ("done.json", "config.json", "metrics.json"):
        try:
            docs[name] = json.loads((folder / name).read_text(encoding="utf-8")) if (folder / name).is_file() else {}
        except (OSError, ValueError):
            return {}, [], f"unreadable {name}"
    cfg, metrics = {**docs["config.json"], "_created": docs["done.json"].get("created", "")}, docs["metrics.json"]
    bad = [k for k in FINITE_METRICS if k in metrics
           and not (isinstance(metrics[k], numbers.Real) and math.isfinite(metrics[k]))]
    if metrics.get("degenerate") or bad:
        return cfg, [], "degenerate answers" if metrics.get("degenerate") else f"non-finite {', '.join(bad)}"
    try:
        gens = [json.loads(x) for x in (folder / GENERATIONS).read_text(encoding="utf-8").splitlines() if x.strip()]
    except (OSError, ValueError):
        return cfg, [], f"unreadable or missing {GENERATIONS}"
    return cfg, gens, "" if gens and all(isinstance(g, dict) for g in gens) else f"no answers in {GENERATIONS}"


def _model_meta(cfg: dict) -> dict:
    stage = cfg.get("stage", "finetune" if cfg.get("finetune_key") else "align")
    method = cfg.get("method")
    if stage == "align":
        method = {"none": "base", "sft": "SFT-aligned", "vaccine": "Vaccine-aligned"}.get(cfg.get("align_method"),
                                                                                           method)
    vaccine = cfg.get("align_method") == "vaccine"
    return {"model_id": cfg.get("finetune_key") or cfg.get("align_key"), "stage": stage, "method": method,
            "task": cfg.get("task"), "n": cfg.get("n"), "p": cfg.get("p"),
            "seed": cfg.get("ft_seed", cfg.get("seed")), "rho": cfg.get("rho", 0.0) if vaccine else 0.0,
            "perturbation": cfg.get("perturbation", "gradient") if vaccine else "-",
            "tau": cfg.get("tau", 1) if vaccine else 1, "lora": cfg.get("lora")}


def describe_excluded(excluded: list[dict], show: int = 3) -> str:
    """One line naming the excluded evaluations (the first ``show``) and why: the flag the claims table carries."""
    named = "; ".join(f"{e['evaluation']}: {e['reason']}" for e in excluded[:show])
    more = f"; and {len(excluded) - show} more (claims.json: provenance.excluded)" if len(excluded) > show else ""
    return f"excluded {len(excluded)} unusable evaluation(s): {named}{more}" if excluded else ""


def load_outcomes(run_dir, rejudge=None) -> pd.DataFrame:
    """Per-item outcomes (:data:`OUTCOME_COLUMNS`) of every usable evaluation in ``run_dir/eval/``: one row per
    (model, judge, part, item); ``item_id`` hashes (part, question, input), so a prompt has the same id in every
    model (pairing). ``rejudge`` (judge names or ``{name: judge}``) adds rows judged from the stored answers. Of
    several evaluations of one model under one judge the most recent is kept (with a warning); unusable ones are
    listed in ``attrs["excluded"]`` (none usable, as with the smoke profile's random model: an empty table)."""
    run_dir = check_run_dir(run_dir)
    judges = dict(rejudge) if isinstance(rejudge, Mapping) else {name: get_judge(name) for name in rejudge or ()}
    for name, j in judges.items():
        if not callable(getattr(j, "judge", None)):
            raise ConfigError(f"rejudge[{name!r}] must have a .judge(questions, answers) method (a vaccine_lib judge)")
    frames, excluded = [], []
    for folder in sorted(d for d in ResultsStore(run_dir).results_dir.iterdir() if (d / "done.json").is_file()):
        cfg, gens, why = _read_evaluation(folder)
        meta, own = _model_meta(cfg), cfg.get("eval_judge", "unknown")
        if why:
            what = "".join(f" {k}={meta[k]:g}" for k in ("p", "seed") if isinstance(meta[k], (int, float)))
            excluded.append({"evaluation": f"{meta['method'] or '?'}{what} (eval/{folder.name})", "reason": why})
            continue
        ids = [hashlib.sha1(f"{g.get('part', HARMFUL_PART)}\x1f{g.get('question', '')}\x1f{g.get('input', '') or ''}"
                            .encode()).hexdigest()[:16] for g in gens]
        flag = lambda g, k: math.nan if g.get(k) is None else float(bool(g[k]))  # noqa: E731
        frame = pd.DataFrame([{**meta, "part": str(g.get("part", HARMFUL_PART)), "item_id": i,
                               "harmful": flag(g, "harmful") if g.get("part", HARMFUL_PART) == HARMFUL_PART
                               else math.nan, "refusal": flag(g, "refusal"), "correct": flag(g, "correct"),
                               "words": len(str(g.get("answer", "")).split())} for g, i in zip(gens, ids)])
        frame = frame.assign(judge=own, _created=cfg["_created"])
        frames.append(frame)
        judged = [i for i, g in enumerate(gens) if "harmful" in g or "refusal" in g]
        for name, judge in judges.items():
            if not judged or name == own:  # the stored verdicts already are this judge's
                continue
            verdicts = list(judge.judge([str(gens[i].get("question", "")) for i in judged],
                                        [str(gens[i].get("answer", "")) for i in judged]))
            if len(verdicts) != len(judged):
                raise ConfigError(f"judge {name!r} returned {len(verdicts)} verdicts for {len(judged)} answers")
            get = lambda v, k: v.get(k) if isinstance(v, Mapping) else getattr(v, k, None)  # noqa: E731
            extra = frame.iloc[judged].assign(judge=name)
            extra["harmful"] = [float(bool(get(v, "harmful"))) if p == HARMFUL_PART else math.nan
                                for v, p in zip(verdicts, extra["part"])]
            extra["refusal"] = [float(bool(get(v, "refusal"))) for v in verdicts]
            frames.append(extra)
    if excluded:
        warnings.warn(describe_excluded(excluded) + " (never counted)", stacklevel=2)
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*OUTCOME_COLUMNS, "_created"])
    stale = df["_created"] != df.groupby(["model_id", "judge"])["_created"].transform("max")
    if stale.any():
        warnings.warn(f"{int(stale.sum())} outcome rows from older evaluations of the same model and judge were "
                      "dropped (the most recent evaluation is kept)", stacklevel=2)
    out = check_outcomes(df[~stale].drop(columns="_created").reset_index(drop=True))
    out.attrs["excluded"] = excluded
    return out


def check_outcomes(df: pd.DataFrame) -> pd.DataFrame:
    """Validate an outcomes table (columns :data:`OUTCOME_COLUMNS`); returns it with numeric columns as floats."""
    if not isinstance(df, pd.DataFrame):
        raise ConfigError(f"outcomes must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in OUTCOME_COLUMNS if c not in df.columns]
    if missing:
        raise ConfigError(f"outcomes lack columns {missing}; expected {list(OUTCOME_COLUMNS)} "
                          "(build them with vaccine_lib.claims.load_outcomes(run_dir))")
    out = df.copy()
    for c in ("p", "rho", "tau", "n", "seed", "harmful", "refusal", "correct", "words"):
        out[c] = pd.to_numeric(out[c], errors="coerce").astype(float)
        bad = out[c].notna() & ~out[c].isin((0.0, 1.0))
        if c in ("harmful", "refusal", "correct") and bad.any():
            raise ConfigError(f"outcome column {c!r} must be 0/1 (or missing); "
                              f"found {sorted(out.loc[bad, c].unique())[:5]}")
    return out[list(OUTCOME_COLUMNS) + [c for c in out.columns if c not in OUTCOME_COLUMNS]]


#: the per-model and per-step tables beside the outcomes: (who writes it, a check of its columns, what it needs)
TABLES = {"model metrics": ("notebook 01 (fig2_harmful_drift.csv)", lambda c: {"p", "seed"} <= c
                            and bool(c & {"method", "defense"}) and bool(c & {"drift", "align_loss"}),
                            "method (or defense), p, seed and drift and/or align_loss"),
          "timings": ("notebook 05 (table5_overhead.csv)", lambda c: {"method", "step_s"} <= c,
                      "method, step_s, step_s_sd, steps, and round_step_s for per-round means (one row per method)")}


def load_table(data, what: str) -> pd.DataFrame | None:
    """A CSV path or DataFrame of the table ``what`` (:data:`TABLES`) with the columns it needs, else a ConfigError."""
    source, ok, need = TABLES[what]
    if data is None or isinstance(data, pd.DataFrame):
        df = None if data is None else data.copy()
    elif not Path(data).is_file():
        raise ConfigError(f"{what} file {str(data)!r} does not exist; pass the CSV {source} writes")
    else:
        try:
            df = pd.read_csv(data)
        except (ValueError, OSError) as exc:
            raise ConfigError(f"{what} file {str(data)!r} is not a readable CSV ({exc}); pass the one {source} "
                              "writes") from None
    if df is not None and not ok(set(df.columns)):
        raise ConfigError(f"{what} need columns {need}; got {list(df.columns)}")
    return df.rename(columns={"defense": "method"}) if df is not None and "method" not in df else df


@dataclass(frozen=True)
class Reference:
    """The setting claims compare at; unset fields are inferred from the outcomes (most common value)."""

    p_star: float | None = None  # harmful ratio of the headline comparison (default: largest p with SFT and Vaccine)
    rho: float | None = None  # Vaccine's reference rho
    task: str | None = None
    n: float | None = None

    def describe(self) -> str:
        return ", ".join(x for x in (f"p = {self.p_star:g}" if self.p_star is not None else "",
                                     f"rho = {self.rho:g}" if self.rho is not None else "",
                                     f"task {self.task}" if self.task else "",
                                     f"n = {self.n:g}" if self.n is not None and math.isfinite(self.n) else "") if x)


def reference_from_profile(name: str) -> Reference:
    """The profile's finetune.p, align.rho, finetune.task and n; an empty Reference (inferred) if it cannot load."""
    try:
        P = load_profile(name)
        f = P.finetune
        return Reference(p_star=float(f.p), rho=float(P.align.rho), task=f.task, n=float(f.for_task(f.task).n))
    except Exception as exc:  # noqa: BLE001 - a custom profile label must not stop the table
        warnings.warn(f"profile {name!r} not loaded ({exc}); the reference setting is inferred from the outcomes",
                      stacklevel=2)
        return Reference()


def select(df: pd.DataFrame, **conds) -> pd.DataFrame:
    """Rows where every given column equals its value (numbers compared with isclose; ``None`` matches all)."""
    mask = pd.Series(True, index=df.index)
    for col, v in conds.items():
        if col in df.columns and v is not None:
            num = isinstance(v, (int, float, np.floating, np.integer))
            mask &= np.isclose(pd.to_numeric(df[col], errors="coerce").astype(float), float(v)) if num else df[col] == v
    return df[mask]


def infer_reference(outcomes: pd.DataFrame | None, ref: Reference | None = None) -> Reference:
    """Fill the unset fields of ``ref`` from the fine-tuned models in ``outcomes`` (counted per model)."""
    ref = ref or Reference()
    if outcomes is None or outcomes.empty:
        return ref
    def mode(s):
        return None if s.dropna().empty else s.dropna().value_counts().sort_index(kind="stable").idxmax()

    vaccine = {"method": "Vaccine", "perturbation": "gradient", "tau": 1}  # Vaccine at its reference settings
    models = outcomes[outcomes["stage"] == "finetune"].drop_duplicates("model_id")
    task = ref.task or mode(models["task"])
    n = ref.n if ref.n is not None else mode(select(models, method="SFT", task=task)["n"])
    rho = ref.rho if ref.rho is not None else mode(select(models, **vaccine)["rho"])
    p_star = ref.p_star
    if p_star is None:
        ft = select(outcomes, stage="finetune", task=task, n=n, part=HARMFUL_PART)
        both = sorted(p for p in set(select(ft, method="SFT")["p"].dropna())
                      & set(select(ft, **vaccine, rho=rho)["p"].dropna()) if p > 0)
        p_star = both[-1] if both else None
    return Reference(p_star=p_star, rho=None if rho is None else float(rho), task=task,
                     n=None if n is None else float(n))

"""The claims' inputs: per-item outcomes of a run directory, per-model metrics, step timings, and the reference
setting (p*, rho, task, n) the claims compare at.

- **outcomes**: one row per (model, judge, part, item), columns :data:`OUTCOME_COLUMNS`, from the stage cache's
  ``eval/<key>/`` folders (:func:`load_outcomes`);
- **model metrics**: one row per fine-tuned model (``method``/``defense``, ``p``, ``seed``, ``drift``,
  ``align_loss``), e.g. ``figures/tables/fig2_harmful_drift.csv``;
- **timings**: per-step seconds (``method``, ``seconds``[, ``tau``]) or a summary per method (``method``,
  ``step_s``, ``step_s_sd``, ``steps``), e.g. ``figures/tables/table5_overhead.csv``.

An evaluation that is no measurement is never counted: degenerate answers (the ``degenerate`` flag the
evaluation writes), non-finite headline metrics, no stored answers or an unreadable file exclude it, and the
exclusion is listed in ``outcomes.attrs["excluded"]``, which the claims table shows in every outcome claim's note.
"""

from __future__ import annotations

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

from ..errors import ConfigError, check_choice
from ..evaluation.results import GENERATIONS, ResultsStore
from ..judge import JUDGES, get_judge
from ..profiles import load_profile

#: columns of the per-item outcomes table
OUTCOME_COLUMNS = ("model_id", "stage", "method", "task", "n", "p", "seed", "rho", "perturbation", "tau", "lora",
                   "judge", "part", "item_id", "harmful", "refusal", "correct", "words")
#: outcomes that depend on the judge (one verdict per judge); ``correct`` and ``words`` do not
JUDGED = ("harmful", "refusal")
HARMFUL_PART = "harmful"
NO_JUDGE = "-"
#: metrics an evaluation must carry as finite numbers (where it has them) to count as a result
FINITE_METRICS = ("hs", "fa", "refusal_rate")
_RUN_FIX = "pass the run directory the notebooks or python -m vaccine_lib.train wrote (runs/<profile>)"


def check_run_dir(run_dir) -> Path:
    """``run_dir`` as a Path when it is a run directory of this project holding evaluations; else a ConfigError
    naming what it is (missing, a file, empty, a foreign folder, no evaluation yet) and the fix."""
    path = Path(run_dir)
    what = f"run_dir={str(path)!r}"
    if not path.exists():
        raise ConfigError(f"{what} does not exist; {_RUN_FIX}", param="run_dir")
    if not path.is_dir():
        raise ConfigError(f"{what} is a file, not a folder; {_RUN_FIX}", param="run_dir")
    if not any(path.iterdir()):
        raise ConfigError(f"{what} is empty; {_RUN_FIX}", param="run_dir")
    store = ResultsStore(path)
    if not store.results_dir.is_dir():
        if not any((path / d).is_dir() for d in ("align", "finetune", "drift")):
            raise ConfigError(f"{what} is not a run directory of this project (no eval/, align/ or finetune/ "
                              f"folder); {_RUN_FIX}", param="run_dir")
        raise ConfigError(f"{what} has no eval/ folder yet: run the evaluations first (python -m vaccine_lib.train "
                          "or the notebooks)", param="run_dir")
    if not any((d / "done.json").is_file() for d in store.results_dir.iterdir()):
        raise ConfigError(f"{what} has no finished evaluation under eval/; run the evaluations first", param="run_dir")
    return path


def _read_evaluation(folder: Path) -> tuple[dict, list, str]:
    """(config, generations, why it cannot be used or "") of one finished evaluation folder."""
    docs = {}
    for name in ("done.json", "config.json", "metrics.json"):
        try:
            docs[name] = json.loads((folder / name).read_text(encoding="utf-8")) if (folder / name).is_file() else {}
        except (OSError, ValueError):
            return {}, [], f"unreadable {name}"
    cfg, metrics = docs["config.json"], docs["metrics.json"]
    if metrics.get("degenerate"):
        return cfg, [], "degenerate answers"
    bad = [k for k in FINITE_METRICS if k in metrics and not (isinstance(metrics[k], numbers.Real)
                                                             and math.isfinite(metrics[k]))]
    if bad:
        return cfg, [], f"non-finite {', '.join(bad)}"
    try:
        lines = (folder / GENERATIONS).read_text(encoding="utf-8").splitlines()
        gens = [json.loads(line) for line in lines if line.strip()]
    except (OSError, ValueError):
        return cfg, [], f"unreadable or missing {GENERATIONS}"
    if not gens or not all(isinstance(g, dict) for g in gens):
        return cfg, [], f"no answers in {GENERATIONS}"
    return {**cfg, "_created": docs["done.json"].get("created", "")}, gens, ""


def _item_id(part: str, question: str, inp: str = "") -> str:
    return hashlib.sha1(f"{part}\x1f{question}\x1f{inp}".encode()).hexdigest()[:16]


def _flag(row: dict, key: str) -> float:
    v = row.get(key)
    return math.nan if v is None else float(bool(v))


def _model_meta(cfg: dict) -> dict:
    stage = cfg.get("stage", "finetune" if cfg.get("finetune_key") else "align")
    method = cfg.get("method")
    if stage == "align":
        method = {"none": "base", "sft": "SFT-aligned", "vaccine": "Vaccine-aligned"}.get(cfg.get("align_method"), method)
    vaccine = cfg.get("align_method") == "vaccine"
    return {"model_id": cfg.get("finetune_key") or cfg.get("align_key"), "stage": stage, "method": method,
            "task": cfg.get("task"), "n": cfg.get("n"), "p": cfg.get("p"),
            "seed": cfg.get("ft_seed", cfg.get("seed")), "rho": cfg.get("rho", 0.0) if vaccine else 0.0,
            "perturbation": cfg.get("perturbation", "gradient") if vaccine else "-",
            "tau": cfg.get("tau", 1) if vaccine else 1, "lora": cfg.get("lora")}


def _describe(folder: Path, cfg: dict) -> str:
    m = _model_meta(cfg) if cfg else {}
    bits = [m.get("method")] + [f"{k}={m[k]:g}" for k in ("p", "rho") if isinstance(m.get(k), float) and m[k]]
    return " ".join(str(b) for b in bits + [f"seed {m.get('seed')}" if m.get("seed") is not None else None,
                                           f"[eval/{folder.name}]"] if b)


def _resolve_judges(rejudge) -> dict:
    if not rejudge:
        return {}
    if isinstance(rejudge, str):
        rejudge = [rejudge]
    if not isinstance(rejudge, Mapping):
        for name in rejudge:
            check_choice("rejudge judge", name, JUDGES)
        rejudge = {name: get_judge(name) for name in rejudge}
    for name, j in rejudge.items():
        if not callable(getattr(j, "judge", None)):
            raise ConfigError(f"rejudge[{name!r}] must have a .judge(questions, answers) method (a vaccine_lib judge)")
    return dict(rejudge)


def _verdict_field(v, key: str):
    return v.get(key) if isinstance(v, Mapping) else getattr(v, key, None)


def load_outcomes(run_dir, rejudge=None) -> pd.DataFrame:
    """Per-item outcomes of every usable evaluation under ``run_dir/eval/`` (:func:`check_run_dir` first).

    One row per (model, judge, part, item): ``part`` is ``"harmful"`` for the HS prompts, the task name for
    fine-tune accuracy items, or any other benign part the evaluation wrote; ``harmful`` is set on harmful
    prompts only, ``refusal`` where the judge gave one, ``correct`` on task items, ``words`` = whitespace-
    separated words of the answer. ``item_id`` hashes (part, question, input), so the same prompt has the same
    id for every model (pairing). ``rejudge``: judge names or ``{name: judge}`` whose verdicts are added as
    extra rows (``judge=name``) from the stored answers, without generating again. Where one model was
    evaluated several times under one judge, the most recent evaluation is kept (with a warning). Evaluations
    that cannot be used are listed in ``attrs["excluded"]`` (``{"evaluation", "reason"}``, and warned about);
    none usable at all is a ConfigError.
    """
    run_dir = check_run_dir(run_dir)
    judges = _resolve_judges(rejudge)
    frames, excluded = [], []
    for folder in sorted(d for d in ResultsStore(run_dir).results_dir.iterdir() if (d / "done.json").is_file()):
        cfg, gens, why = _read_evaluation(folder)
        if why:
            excluded.append({"evaluation": _describe(folder, cfg), "reason": why})
            continue
        meta, own = _model_meta(cfg), cfg.get("eval_judge", "unknown")
        rows = []
        for g in gens:
            part = str(g.get("part", HARMFUL_PART))
            rows.append({**meta, "part": part, "item_id": _item_id(part, str(g.get("question", "")),
                                                                   str(g.get("input", "") or "")),
                         "harmful": _flag(g, "harmful") if part == HARMFUL_PART else math.nan,
                         "refusal": _flag(g, "refusal"), "correct": _flag(g, "correct"),
                         "words": len(str(g.get("answer", "")).split())})
        frame = pd.DataFrame(rows).assign(judge=own, _created=cfg["_created"])
        frames.append(frame)
        judged = [i for i, g in enumerate(gens) if "harmful" in g or "refusal" in g]
        for name, judge in judges.items():
            if not judged or name == own:  # the stored verdicts already are this judge's
                continue
            verdicts = list(judge.judge([str(gens[i].get("question", "")) for i in judged],
                                        [str(gens[i].get("answer", "")) for i in judged]))
            if len(verdicts) != len(judged):
                raise ConfigError(f"judge {name!r} returned {len(verdicts)} verdicts for {len(judged)} answers")
            extra = frame.iloc[judged].assign(judge=name)
            extra["harmful"] = [float(bool(_verdict_field(v, "harmful"))) if p == HARMFUL_PART else math.nan
                                for v, p in zip(verdicts, extra["part"])]
            extra["refusal"] = [float(bool(_verdict_field(v, "refusal"))) for v in verdicts]
            frames.append(extra)
    if excluded:
        warnings.warn(f"{len(excluded)} evaluation(s) excluded from the claims: "
                      + "; ".join(f"{e['evaluation']} ({e['reason']})" for e in excluded), stacklevel=2)
    if not frames:
        raise ConfigError(f"run_dir={str(run_dir)!r} has no usable evaluation: all {len(excluded)} are excluded ("
                          + "; ".join(sorted({e["reason"] for e in excluded})) + "); redo them (delete their eval/ "
                          "folders and rerun python -m vaccine_lib.train)", param="run_dir")
    df = pd.concat(frames, ignore_index=True)
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
    for c in ("harmful", "refusal", "correct"):
        bad = out[c].notna() & ~out[c].isin((0.0, 1.0))
        if bad.any():
            raise ConfigError(f"outcome column {c!r} must be 0/1 (or missing); found {sorted(out.loc[bad, c].unique())[:5]}")
    return out[list(OUTCOME_COLUMNS) + [c for c in out.columns if c not in OUTCOME_COLUMNS]]


def _read_table(data, what: str, need: str) -> pd.DataFrame | None:
    if data is None or isinstance(data, pd.DataFrame):
        return None if data is None else data.copy()
    path = Path(data)
    if not path.is_file():
        raise ConfigError(f"{what} file {str(path)!r} does not exist; pass a CSV written by the notebooks ({need})")
    try:
        return pd.read_csv(path)
    except (ValueError, OSError) as exc:
        raise ConfigError(f"{what} file {str(path)!r} is not a readable CSV ({exc}); pass the one {need} writes") from None


def load_model_metrics(data) -> pd.DataFrame | None:
    """Per-model metrics (CSV path or DataFrame): ``method`` (or ``defense``), ``p``, ``seed`` and ``drift``
    and/or ``align_loss``."""
    df = _read_table(data, "model metrics", "notebook 01: fig2_harmful_drift.csv")
    if df is None:
        return None
    if "method" not in df.columns and "defense" in df.columns:
        df = df.rename(columns={"defense": "method"})
    missing = [c for c in ("method", "p", "seed") if c not in df.columns]
    if missing or not ({"drift", "align_loss"} & set(df.columns)):
        raise ConfigError(f"model metrics need columns method (or defense), p, seed and drift and/or align_loss; "
                          f"missing {missing or ['drift/align_loss']}; got {list(df.columns)}")
    return df


def load_timings(data) -> pd.DataFrame | None:
    """Step timings (CSV path or DataFrame): per step (``method``, ``seconds``[, ``tau``]) or a summary per method
    (``method``, ``step_s``, ``step_s_sd``, ``steps``)."""
    df = _read_table(data, "timings", "notebook 05: table5_overhead.csv")
    if df is not None and ("method" not in df.columns or not ({"seconds", "step_s"} & set(df.columns))):
        raise ConfigError("timings need columns method and seconds (one row per step) or method, step_s, "
                          f"step_s_sd, steps (one row per method); got {list(df.columns)}")
    return df


# --------------------------------------------------------------------------- reference setting


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
    """The profile's headline setting (``finetune.p``, ``align.rho``, ``finetune.task``, ``finetune.n``); an empty
    :class:`Reference` (everything inferred from the outcomes, with a warning) when the profile cannot be loaded."""
    try:
        P = load_profile(name)
        f = P.finetune
        return Reference(p_star=float(f.p), rho=float(P.align.rho), task=f.task, n=float(f.for_task(f.task).n))
    except Exception as exc:  # noqa: BLE001 - a custom profile label must not stop the table
        warnings.warn(f"profile {name!r} not loaded ({exc}); the reference setting is inferred from the outcomes",
                      stacklevel=2)
        return Reference()


def _mode(values: pd.Series):
    values = values.dropna()
    return None if values.empty else values.value_counts().sort_index(kind="stable").idxmax()


def select(df: pd.DataFrame, **conds) -> pd.DataFrame:
    """Rows where every given column equals its value (numbers compared with isclose; ``None`` matches all)."""
    mask = pd.Series(True, index=df.index)
    for col, value in conds.items():
        if col in df.columns and value is not None:
            if isinstance(value, (int, float, np.floating, np.integer)):
                mask &= np.isclose(pd.to_numeric(df[col], errors="coerce").astype(float), float(value))
            else:
                mask &= df[col] == value
    return df[mask]


def infer_reference(outcomes: pd.DataFrame | None, ref: Reference | None = None) -> Reference:
    """Fill the unset fields of ``ref`` from the fine-tuned models in ``outcomes`` (counted per model)."""
    ref = ref or Reference()
    if outcomes is None or outcomes.empty:
        return ref
    models = outcomes[outcomes["stage"] == "finetune"].drop_duplicates("model_id")
    task = ref.task or _mode(models["task"])
    n = ref.n if ref.n is not None else _mode(select(models, method="SFT", task=task)["n"])
    rho = ref.rho if ref.rho is not None else _mode(select(models, method="Vaccine", perturbation="gradient", tau=1)["rho"])
    p_star = ref.p_star
    if p_star is None:
        ft = select(outcomes, stage="finetune", task=task, n=n, part=HARMFUL_PART)
        sft = set(select(ft, method="SFT")["p"].dropna())
        vp = set(select(ft, method="Vaccine", perturbation="gradient", tau=1, rho=rho)["p"].dropna())
        both = sorted(p for p in sft & vp if p > 0)
        p_star = both[-1] if both else None
    return Reference(p_star=p_star, rho=None if rho is None else float(rho), task=task, n=None if n is None else float(n))

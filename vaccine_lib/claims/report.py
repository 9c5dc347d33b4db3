"""The claims table on disk and on screen: CSV + JSON with provenance, the per-notebook markdown, and the
README block (rendered through ``vaccine_lib.readme``; ``make readme`` writes it, no notebook does)."""

import datetime as _dt
import hashlib
import json
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .. import readme as RM
from .. import stats as S
from ..atomic import atomic_path
from ..errors import ConfigError
from ..judge import DEFAULT_JUDGE
from ..paths import REPO_ROOT
from ..provenance import git_state, record
from .definitions import CLAIMS, TABLE_COLUMNS, evaluate_claims
from .outcomes import NO_JUDGE, Reference, infer_reference, load_outcomes

DEFAULT_TABLE = REPO_ROOT / "figures" / "tables" / "claims"
README = RM.README
BEGIN, END = RM.markers("claims")


def _sha256_files(paths: Sequence[Path], root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(str(p.relative_to(root)).encode() + b"\0")
        h.update(p.read_bytes())
    return h.hexdigest()


def input_hash(path) -> str:
    """sha256 of an input: a file's bytes, or a run directory's evaluations (``eval/*/`` config, metrics, answers)."""
    path = Path(path)
    if path.is_dir():
        return _sha256_files([f for pat in ("config.json", "metrics.json", "generations.jsonl")
                              for f in path.glob(f"eval/*/{pat}")], path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def provenance(inputs: Mapping[str, object] | None = None, **settings) -> dict:
    """Git commit, dirty flag (``vaccine_lib.provenance.git_state``), UTC date, the hash of the claims code and
    ``stats`` and each input's sha256 (+ ``settings``)."""
    code = _sha256_files([Path(S.__file__), *Path(__file__).parent.glob("*.py")], REPO_ROOT)
    git = git_state()
    out = {"git_commit": git["commit"], "git_dirty": git["dirty"],
           "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "code_sha256": code,
           "inputs": {}, "stats": {"level": S.LEVEL, "n_boot": S.N_BOOT, "rng_seed": S.RNG_SEED}}
    for name, path in (inputs or {}).items():
        out["inputs"][name] = (None if path is None else "in-memory DataFrame" if isinstance(path, pd.DataFrame)
                               else {"path": str(path), "sha256": input_hash(path)})
    return {**out, **settings}


def _jsonable(v):
    if isinstance(v, (np.floating, np.integer)):
        v = v.item()
    return None if isinstance(v, float) and not math.isfinite(v) else v


def write_claims_table(table: pd.DataFrame, stem=DEFAULT_TABLE, prov: dict | None = None) -> tuple[Path, Path]:
    """Write ``<stem>.csv`` and ``<stem>.json`` (rows + provenance) atomically; returns both paths."""
    stem = Path(stem)
    csv_path, json_path = stem.with_suffix(".csv"), stem.with_suffix(".json")
    rows = [{k: _jsonable(v) for k, v in r.items()} for r in table.to_dict("records")]
    with atomic_path(csv_path) as tmp_csv, atomic_path(json_path) as tmp_json:  # both written, then both renamed
        tmp_csv.write_text(table.to_csv(index=False, float_format="%.6g"), encoding="utf-8")
        tmp_json.write_text(json.dumps({"provenance": prov or {}, "claims": rows}, indent=2) + "\n", encoding="utf-8")
    return csv_path, json_path


def read_claims_table(stem=DEFAULT_TABLE) -> pd.DataFrame:
    path = Path(stem).with_suffix(".csv")
    if not path.is_file():
        raise ConfigError(f"no claims table at {str(path)!r}; run python -m vaccine_lib.claims first")
    df = pd.read_csv(path, keep_default_na=False, na_values=[""])
    missing = [c for c in TABLE_COLUMNS if c not in df.columns]
    if missing:
        raise ConfigError(f"claims table {str(path)!r} lacks columns {missing}; regenerate it")
    for c in ("judge", "note", "setting", "detail", "method", "paper_note"):
        df[c] = df[c].astype(object).where(df[c].notna(), "").astype(str)
    return df


def read_provenance(stem=DEFAULT_TABLE) -> dict:
    path = Path(stem).with_suffix(".json")
    return json.loads(path.read_text(encoding="utf-8")).get("provenance", {}) if path.is_file() else {}


def _num(x: float, digits: int) -> str:
    if not (isinstance(x, (int, float)) and math.isfinite(x)):
        return "-"
    return (f"{x:.3g}" if digits >= 3 else f"{x:.{digits}f}").replace("-", "\u2212")


def _fmt_effect(row, digits: int) -> str:
    e = f"{_num(row['effect'], digits)}{'x' if row['unit'] == 'x' else ''}"
    if math.isfinite(row["ci_lo"]) and math.isfinite(row["ci_hi"]):
        return f"{e} [{_num(row['ci_lo'], digits)}, {_num(row['ci_hi'], digits)}]"
    return f"{e} (no CI)"


SUMMARY_COLUMNS = ("claim", "paper", "paper effect", "ours: effect [95 % CI]", "verdict", "notebook", "profile")


def summarize_claims(table: pd.DataFrame) -> pd.DataFrame:
    """One row per claim (display strings): claim, paper, paper effect, ours per judge (the primary judge,
    ``judge.DEFAULT_JUDGE``, first and marked), verdict, notebook, profile."""
    out = []
    for cid, g in table.groupby("claim", sort=False):
        first, digits = g.iloc[0], next((c.digits for c in CLAIMS if c.id == cid), 1)
        unit, pe, not_run = "x" if first["unit"] == "x" else "", first["paper_effect"], first["verdict"] == S.NOT_RUN
        paper_eff = f"{_num(pe, digits)}{unit} ({first['paper_note']})" if math.isfinite(pe) else first["paper_note"] or "-"
        if not_run:
            ours = f"not run: {first['note']}" if first["note"] else "not run"
        else:
            rows = sorted((r for _, r in g.iterrows() if r["judge_verdict"] != S.NOT_RUN),
                          key=lambda r: r["judge"] != DEFAULT_JUDGE)  # the primary judge first (docs/judges.md)
            ours = "; ".join(("" if r["judge"] == NO_JUDGE else f"{r['judge']}{' (primary)' * (r['judge'] == DEFAULT_JUDGE)}: ")
                             + _fmt_effect(r, digits) for r in rows)
            ours += f" ({first['setting']})" if first["setting"] else ""
        verdict = first["verdict"] + (f" ({first['note']})" if not not_run and first["note"] else "")
        out.append(dict(zip(SUMMARY_COLUMNS, (
            f"{cid} {first['statement']}; effect: {first['effect_label']} ({first['unit']})", first["paper"],
            paper_eff, ours, verdict, f"`{first['notebook']}`", first["profile"]))))
    return pd.DataFrame(out, columns=list(SUMMARY_COLUMNS))


def claims_frame(notebook: str | None = None, table: pd.DataFrame | None = None, stem=DEFAULT_TABLE) -> pd.DataFrame:
    """The claims (one row each, display strings) for a notebook (prefix match, e.g. ``"03"``) or all."""
    table = read_claims_table(stem) if table is None else table
    if notebook:
        table = table[table["notebook"].astype(str).str.startswith(str(notebook))]
    return summarize_claims(table)


def claims_markdown(notebook: str | None = None, table: pd.DataFrame | None = None, stem=DEFAULT_TABLE) -> str:
    """Markdown of :func:`claims_frame` (a notebook's result cell shows the same text as the README)."""
    df = claims_frame(notebook, table, stem)
    return RM.md_table(df.columns, df.itertuples(index=False))


def render_block(table: pd.DataFrame, prov: Mapping | None = None) -> str:
    """The README block (markers included) generated from the claims table."""
    prov = prov or {}
    commit = (prov.get("git_commit") or "")[:10]
    origin = ", ".join(x for x in (f"commit {commit}" if commit else "", "dirty tree" if prov.get("git_dirty") else "",
                                   prov.get("date", "")) if x)
    header = ("Generated by `python -m vaccine_lib.claims --render-readme` from `figures/tables/claims.csv`"
              + (f" ({origin})" if origin else "") + "; do not edit by hand. Verdict rule (`vaccine_lib.stats`): "
              "**held** = the 95 % CI excludes 0 in the paper's direction (or lies inside the stated bounds), "
              "**refuted** = it excludes 0 the other way (or lies outside), otherwise **inconclusive**; "
              "an HS claim is held only when every judge holds it.")
    return RM.render("claims", header, claims_markdown(table=table))


def render_readme(readme=README, stem=DEFAULT_TABLE) -> bool:
    """Replace the README's claims block with the table's rendering; True when the file changed."""
    return RM.replace(readme, "claims", render_block(read_claims_table(stem), read_provenance(stem)))


def readme_matches(readme=README, stem=DEFAULT_TABLE) -> bool:
    """Whether the README's claims block is exactly the rendering of the claims table."""
    return RM.block(readme, "claims") == render_block(read_claims_table(stem), read_provenance(stem))


def claims_table(outcomes, model_metrics=None, timings=None, *, run_dir=None, reference: Reference | None = None,
                 min_judges: int = 2, profile: str = "", rejudge: Sequence[str] = ()) -> tuple[pd.DataFrame, dict]:
    """:func:`evaluate_claims` and its provenance (inputs' sha256, reference, exclusions): what gets written."""
    table = evaluate_claims(outcomes, model_metrics, timings, reference=reference, min_judges=min_judges,
                            profile=profile)
    prov = provenance({"run_dir": run_dir, "model_metrics": model_metrics, "timings": timings}, profile=profile,
                      min_judges=min_judges, reference=infer_reference(outcomes, reference).__dict__,
                      rejudge=list(rejudge), excluded=[] if outcomes is None else outcomes.attrs.get("excluded", []))
    return table, prov


def claims_for_run(P, run_dir, tables_dir, rejudge: Sequence[str] = ("probe",), min_judges: int = 2,
                   write: bool = True) -> tuple[pd.DataFrame, dict]:
    """The claims table of one profile's run: outcomes from ``run_dir`` (own judge + ``rejudge``), drift and
    alignment loss from notebook 01's ``fig2_harmful_drift.csv``, step times from notebook 05's
    ``table5_overhead.csv`` in ``tables_dir``; written to ``tables_dir/claims.{csv,json}``."""
    tables_dir = Path(tables_dir)
    metrics, timings = (f if f.is_file() else None for f in (tables_dir / "fig2_harmful_drift.csv",
                                                              tables_dir / "table5_overhead.csv"))
    table, prov = claims_table(load_outcomes(run_dir, rejudge=list(rejudge)), metrics, timings, run_dir=run_dir,
                               reference=Reference(p_star=P.finetune.p, rho=P.align.rho, task=P.finetune.task,
                                                   n=P.finetune.n),
                               min_judges=min_judges, profile=P.label, rejudge=rejudge)
    if write:
        write_claims_table(table, tables_dir / "claims", prov)
        record(tables_dir, "claims", table="claims.csv", detail="claims.json (inputs' sha256, stats settings)")
    return table, prov


def notebook_claims(P, run_dir, tables_dir, notebook: str) -> str:
    """Markdown of a notebook's claims computed from this run: the rows notebook 06 writes to ``claims.csv``
    (same inputs, judges and rule), for the result cell at the end of notebooks 01-05."""
    table, _ = claims_for_run(P, run_dir, tables_dir, rejudge=P.eval.rejudge, write=False)
    return claims_markdown(notebook, table=table)

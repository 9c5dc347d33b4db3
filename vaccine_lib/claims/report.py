"""The claims table on disk and on screen: CSV + JSON with provenance, the per-notebook markdown, the README
block (rendered through ``vaccine_lib.readme``; ``make readme`` writes it, no notebook does), and the CLI:

    python -m vaccine_lib.claims --run-dir runs/default --model-metrics figures/tables/fig2_harmful_drift.csv \\
        --timings figures/tables/table5_overhead.csv --profile default   # -> figures/tables/claims.{csv,json}
    python -m vaccine_lib.claims --render-readme    # README block from the committed claims table (make readme)
    python -m vaccine_lib.claims --check-readme     # exit 1 when README and the claims table disagree

A bad option or input ends in one ``error:`` line naming the option, the allowed values and the fix.
"""

import argparse
import datetime as _dt
import hashlib
import json
import math
import sys
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .. import readme as RM
from .. import stats as S
from ..atomic import atomic_path
from ..config import AlignConfig, FinetuneConfig
from ..errors import ConfigError, VaccineError
from ..judge import DEFAULT_JUDGE, JUDGES
from ..paths import REPO_ROOT
from ..profiles import load_profile
from ..provenance import git_state, record
from .definitions import CLAIMS, TABLE_COLUMNS, evaluate_claims
from .outcomes import NO_JUDGE, Reference, infer_reference, load_outcomes, reference_from_profile, select

DEFAULT_TABLE = REPO_ROOT / "figures" / "tables" / "claims"
README = RM.README
BEGIN, END = RM.markers("claims")
SUMMARY_COLUMNS = ("claim", "paper", "paper effect", "ours: effect [95 % CI]", "verdict", "notebook", "profile")


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


def _rendered(stem) -> str:  # the README block the table at ``stem`` (CSV + its JSON's provenance) renders to
    table, path = read_claims_table(stem), Path(stem).with_suffix(".json")
    prov = json.loads(path.read_text(encoding="utf-8")).get("provenance", {}) if path.is_file() else {}
    return render_block(table, prov)


def _num(x: float, digits: int) -> str:
    if not (isinstance(x, (int, float)) and math.isfinite(x)):
        return "-"
    return (f"{x:.3g}" if digits >= 3 else f"{x:.{digits}f}").replace("-", "\u2212")


def _fmt_effect(row, digits: int) -> str:
    judge = "" if row["judge"] == NO_JUDGE else f"{row['judge']}{' (primary)' * (row['judge'] == DEFAULT_JUDGE)}: "
    e = f"{judge}{_num(row['effect'], digits)}{'x' if row['unit'] == 'x' else ''}"
    if math.isfinite(row["ci_lo"]) and math.isfinite(row["ci_hi"]):
        return f"{e} [{_num(row['ci_lo'], digits)}, {_num(row['ci_hi'], digits)}]"
    return f"{e} (no CI)"


def summarize_claims(table: pd.DataFrame, notebook: str | None = None) -> pd.DataFrame:
    """One row per claim of ``notebook`` (prefix, e.g. ``"03"``) or all, as display strings (:data:`SUMMARY_COLUMNS`);
    ours per judge, the primary judge (``judge.DEFAULT_JUDGE``) first and marked."""
    if notebook:
        table = table[table["notebook"].astype(str).str.startswith(str(notebook))]
    out = []
    for cid, g in table.groupby("claim", sort=False):
        first, digits = g.iloc[0], next((c.digits for c in CLAIMS if c.id == cid), 1)
        unit, pe, not_run = "x" if first["unit"] == "x" else "", first["paper_effect"], first["verdict"] == S.NOT_RUN
        paper_eff = (f"{_num(pe, digits)}{unit} ({first['paper_note']})" if math.isfinite(pe)
                     else first["paper_note"] or "-")
        if not_run:
            ours = f"not run: {first['note']}" if first["note"] else "not run"
        else:
            rows = sorted((r for _, r in g.iterrows() if r["judge_verdict"] != S.NOT_RUN),
                          key=lambda r: r["judge"] != DEFAULT_JUDGE)  # the primary judge first (docs/judges.md)
            ours = "; ".join(_fmt_effect(r, digits) for r in rows)
            ours += f" ({first['setting']})" if first["setting"] else ""
        verdict = first["verdict"] + (f" ({first['note']})" if not not_run and first["note"] else "")
        out.append(dict(zip(SUMMARY_COLUMNS, (
            f"{cid} {first['statement']}; effect: {first['effect_label']} ({first['unit']})", first["paper"],
            paper_eff, ours, verdict, f"`{first['notebook']}`", first["profile"]))))
    return pd.DataFrame(out, columns=list(SUMMARY_COLUMNS))


def claims_markdown(notebook: str | None = None, table: pd.DataFrame | None = None) -> str:
    """Markdown of :func:`summarize_claims` of ``table`` (default: the committed one), as the README shows it."""
    df = summarize_claims(read_claims_table() if table is None else table, notebook)
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
    return RM.replace(readme, "claims", _rendered(stem))


def readme_matches(readme=README, stem=DEFAULT_TABLE) -> bool:
    return RM.block(readme, "claims") == _rendered(stem)


def claims_table(outcomes, model_metrics=None, timings=None, *, run_dir=None, reference: Reference | None = None,
                 min_judges: int = 2, profile: str = "", rejudge: Sequence[str] = ()) -> tuple[pd.DataFrame, dict]:
    """:func:`evaluate_claims` and its provenance: git commit and dirty flag, UTC date, the sha256 of the claims
    code and ``stats``, of each input, the settings (stats, reference, judges) and the excluded evaluations."""
    table = evaluate_claims(outcomes, model_metrics, timings, reference=reference, min_judges=min_judges,
                            profile=profile)
    git, inputs = git_state(), {"run_dir": run_dir, "model_metrics": model_metrics, "timings": timings}
    return table, {
        "git_commit": git["commit"], "git_dirty": git["dirty"],
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "code_sha256": _sha256_files([Path(S.__file__), *Path(__file__).parent.glob("*.py")], REPO_ROOT),
        "inputs": {name: None if path is None else "in-memory DataFrame" if isinstance(path, pd.DataFrame)
                   else {"path": str(path), "sha256": input_hash(path)} for name, path in inputs.items()},
        "stats": {"level": S.LEVEL, "n_boot": S.N_BOOT, "rng_seed": S.RNG_SEED}, "profile": profile,
        "min_judges": min_judges, "reference": infer_reference(outcomes, reference).__dict__, "rejudge": list(rejudge),
        "excluded": [] if outcomes is None else outcomes.attrs.get("excluded", [])}


def claims_for_run(P, run_dir, tables_dir, rejudge: Sequence[str] | None = None, min_judges: int = 2,
                   write: bool = True) -> tuple[pd.DataFrame, dict]:
    """One profile's claims table: outcomes from ``run_dir`` (own judge + ``rejudge``, default ``P.eval.rejudge``),
    notebook 01's drift / alignment loss and 05's step times from ``tables_dir``; written there as claims.{csv,json}."""
    tables_dir, rejudge = Path(tables_dir), P.eval.rejudge if rejudge is None else rejudge
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
    table, _ = claims_for_run(P, run_dir, tables_dir, write=False)
    return claims_markdown(notebook, table=table)


def _check_options(args, outcomes=None) -> None:
    """--profile and --rejudge exist, --p-star / --rho lie in their stage config's range and, given a run, are
    values it has (else every claim at them would silently be "not run")."""
    if args.profile and outcomes is None:
        try:
            load_profile(args.profile)
        except ConfigError as exc:
            raise ConfigError(f"--profile {args.profile!r}: {exc}") from None
    bad = [j for j in args.rejudge if j not in JUDGES]
    if bad:
        raise ConfigError(f"--rejudge {' '.join(bad)}: unknown judge; allowed values: {', '.join(JUDGES)}. "
                          "Fix: pass judges from that list")
    for flag, value, field, make in (("--p-star", args.p_star, "finetune.p", lambda v: FinetuneConfig(p=v)),
                                     ("--rho", args.rho, "align.rho", lambda v: AlignConfig(method="vaccine", rho=v))):
        if value is None:
            continue
        try:
            make(value)
        except ConfigError as exc:
            raise ConfigError(str(exc).replace(field, flag)) from None
        if outcomes is not None:
            col, what = ("p", "fine-tuned") if flag == "--p-star" else ("rho", "Vaccine")
            rows = select(outcomes, stage="finetune", **({} if col == "p" else {"method": "Vaccine", "tau": 1}))
            if select(rows, **{col: value}).empty:
                have = ", ".join(f"{v:g}" for v in sorted(rows[col].dropna().unique())) or "none"
                raise ConfigError(f"{flag}={value:g}: the run has no {what} evaluation at {col} = {value:g}; values "
                                  f"in the run: {have}. Fix: pass one of them or leave {flag} out")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vaccine_lib.claims",
                                 description="the claims table from a run's outputs, and the README block from it")
    ap.add_argument("--run-dir", help="run directory (runs/<profile>) whose eval/ holds the per-item outcomes")
    ap.add_argument("--model-metrics", help="CSV of per-model drift / align_loss (notebook 01: fig2_harmful_drift.csv)")
    ap.add_argument("--timings", help="CSV of step timings (figures/tables/table5_overhead.csv)")
    ap.add_argument("--rejudge", nargs="*", default=[], help=f"re-judge the stored answers with ({', '.join(JUDGES)})")
    ap.add_argument("--profile", default="", help="profile (name or YAML) of the inputs: its p, rho, task, n are the "
                    "reference setting")
    ap.add_argument("--p-star", type=float, help="headline harmful ratio (default: the profile's, else the largest p "
                    "with SFT and Vaccine outcomes)")
    ap.add_argument("--rho", type=float, help="Vaccine's reference rho (default: the profile's, else inferred)")
    ap.add_argument("--min-judges", type=int, default=2, help="judges that must agree on an HS verdict (default 2)")
    ap.add_argument("--out", default=str(DEFAULT_TABLE), help="output stem: <out>.csv and <out>.json")
    ap.add_argument("--compute", action="store_true", help="write the table even without inputs (all 'not run')")
    ap.add_argument("--render-readme", action="store_true", help="regenerate the README claims block from the table")
    ap.add_argument("--check-readme", action="store_true", help="exit 1 if the README block and the table disagree")
    ap.add_argument("--readme", default=str(README))
    args = ap.parse_args(argv)
    if args.min_judges < 1:
        ap.error(f"--min-judges={args.min_judges} is out of range; allowed range: integers >= 1. "
                 "Fix: e.g. --min-judges 2")
    compute = args.compute or any([args.run_dir, args.model_metrics, args.timings])
    if not (compute or args.render_readme or args.check_readme):
        ap.error("nothing to do: give inputs (--run-dir / --model-metrics / --timings), --compute, "
                 "--render-readme or --check-readme")
    try:
        _check_options(args)
        if compute:  # everything is computed and checked before the two files are written
            with warnings.catch_warnings(record=True) as caught:  # exclusions, dropped stale rows: one line each
                warnings.simplefilter("always")
                outcomes = load_outcomes(args.run_dir, rejudge=args.rejudge) if args.run_dir else None
            for w in caught:
                print(f"{ap.prog}: warning: {w.message}", file=sys.stderr)
            _check_options(args, outcomes)
            ref = reference_from_profile(args.profile) if args.profile else Reference()
            ref = replace(ref, **{k: v for k, v in (("p_star", args.p_star), ("rho", args.rho)) if v is not None})
            table, prov = claims_table(outcomes, args.model_metrics, args.timings, run_dir=args.run_dir, reference=ref,
                                       min_judges=args.min_judges, profile=args.profile, rejudge=args.rejudge)
            paths = write_claims_table(table, args.out, prov)
            counts = table.drop_duplicates("claim")["verdict"].value_counts().to_dict()
            print(f"wrote {paths[0]} and {paths[1]}: {counts}")
        if args.render_readme:
            changed = render_readme(args.readme, args.out)
            print(f"{args.readme}: claims block {'updated' if changed else 'already up to date'}")
        if args.check_readme and not readme_matches(args.readme, args.out):
            print(f"{args.readme}: the claims block differs from {args.out}.csv; run make readme", file=sys.stderr)
            return 1
    except VaccineError as exc:
        ap.error(str(exc).replace("run_dir=", "--run-dir=", 1))
    except OSError as exc:  # a folder that is a file, read-only, a full disk: name the path and the fix
        ap.error(f"cannot read or write {exc.filename or args.out}: {exc.strerror or exc}. Fix: give --out / --readme "
                 "paths that exist, in a writable folder with free space")
    return 0

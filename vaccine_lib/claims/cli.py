"""``python -m vaccine_lib.claims``: the claims table from a run's outputs, and the README block from the table.

    python -m vaccine_lib.claims --run-dir runs/default --model-metrics figures/tables/fig2_harmful_drift.csv \\
        --timings figures/tables/table5_overhead.csv --profile default   # -> figures/tables/claims.{csv,json}
    python -m vaccine_lib.claims --render-readme    # README block from the committed claims table (make readme)
    python -m vaccine_lib.claims --check-readme     # exit 1 when README and the claims table disagree

A bad option or input ends in one ``error:`` line naming the option, the allowed values and the fix.
"""

import argparse
import sys
import warnings
from dataclasses import replace
from typing import Sequence

from ..config import AlignConfig, FinetuneConfig
from ..errors import ConfigError, VaccineError
from ..judge import JUDGES
from ..profiles import load_profile
from .outcomes import Reference, load_outcomes, reference_from_profile, select
from .report import DEFAULT_TABLE, README, claims_table, readme_matches, render_readme, write_claims_table


def _check_options(args, outcomes=None) -> None:
    """--profile is a profile, --rejudge names judges, --p-star / --rho lie in the range their stage config declares
    (one home) and, given a run, are values it has (else every claim at them would silently be "not run")."""
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
    ap = argparse.ArgumentParser(prog="python -m vaccine_lib.claims", description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-dir", help="run directory (runs/<profile>) whose eval/ holds the per-item outcomes")
    ap.add_argument("--model-metrics", help="CSV of per-model drift / align_loss (figures/tables/fig2_harmful_drift.csv)")
    ap.add_argument("--timings", help="CSV of step timings (figures/tables/table5_overhead.csv)")
    ap.add_argument("--rejudge", nargs="*", default=[],
                    help=f"also judge the stored answers with these ({', '.join(JUDGES)})")
    ap.add_argument("--profile", default="", help="profile (name or YAML) that produced the inputs: its finetune.p / "
                    "align.rho / task / n are the reference setting")
    ap.add_argument("--p-star", type=float, help="harmful ratio of the headline comparison (default: the profile's, "
                    "else the largest p with SFT and Vaccine outcomes)")
    ap.add_argument("--rho", type=float, help="Vaccine's reference rho (default: the profile's, else inferred)")
    ap.add_argument("--min-judges", type=int, default=2, help="judges that must agree on an HS verdict (default 2)")
    ap.add_argument("--out", default=str(DEFAULT_TABLE), help="output stem: <out>.csv and <out>.json")
    ap.add_argument("--compute", action="store_true", help="write the table even without inputs (all 'not run')")
    ap.add_argument("--render-readme", action="store_true", help="regenerate the README claims block from the table")
    ap.add_argument("--check-readme", action="store_true", help="exit 1 if the README block and the table disagree")
    ap.add_argument("--readme", default=str(README))
    args = ap.parse_args(argv)
    if args.min_judges < 1:
        ap.error(f"--min-judges={args.min_judges} is out of range; allowed range: integers >= 1. Fix: e.g. --min-judges 2")
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

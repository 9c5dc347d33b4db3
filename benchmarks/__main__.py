"""``python -m benchmarks [step_overhead|generation|speed|eval_cost|cost_model ...]``: run benchmarks, one JSON line
each."""

import argparse
import json
import sys
from pathlib import Path

from vaccine_lib.cli import errors_as_exit, writable_dir
from vaccine_lib.config import MODELS

from . import cost_model, eval_cost, generation, record, speed, step_overhead

BENCHES = {"step_overhead": step_overhead, "generation": generation, "speed": speed, "eval_cost": eval_cost,
           "cost_model": cost_model}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    ap.add_argument("names", nargs="*", default=list(BENCHES), metavar="NAME",
                    help=f"benchmarks to run (default: all of {', '.join(BENCHES)})")
    ap.add_argument("--model", default="smollm2-135m-instruct", help="registry name of the model to benchmark")
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (for a smoke check)")
    ap.add_argument("--out", help="also record the results in this JSONL file (make bench: "
                    "figures/tables/bench.jsonl) and regenerate the README's benchmark block from it")
    args = ap.parse_args(argv)
    bad = [n for n in args.names if n not in BENCHES]
    if bad:
        ap.error(f"unknown benchmark(s) {', '.join(map(repr, bad))}; allowed values: {', '.join(BENCHES)}")
    if args.model not in MODELS and not Path(args.model).is_dir():
        ap.error(f"--model {args.model!r}: allowed values: {', '.join(MODELS)} or a local model folder")
    with errors_as_exit(ap):
        if args.out:  # before an hour of measurement, not after
            writable_dir(Path(args.out).parent, "--out folder", "pass a writable file path to --out")
        results = []
        for name in args.names:
            results.append(BENCHES[name].run(model_name=args.model, quick=args.quick))
            print(json.dumps(results[-1]), flush=True)
        if args.out:
            record.write(results, args.out)
            if Path(args.out).resolve() == record.DEFAULT_FILE.resolve():
                print("README benchmark block " + ("updated" if record.render_readme() else "unchanged"), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

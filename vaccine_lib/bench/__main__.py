"""``python -m vaccine_lib.bench [step_overhead|generation ...]``: run benchmarks, one JSON line each."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

BENCHES = ("step_overhead", "generation")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vaccine_lib.bench", description=__doc__)
    parser.add_argument("names", nargs="*", default=list(BENCHES), help=f"benchmarks to run (default: all of {BENCHES})")
    parser.add_argument("--model", default="smollm2-135m-instruct", help="registry name of the model to benchmark")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (for a smoke check)")
    parser.add_argument("--out", help="also record the results in this JSONL file (make bench: "
                        "figures/tables/bench.jsonl) and regenerate the README's benchmark block from it")
    args = parser.parse_args(argv)
    results = []
    for name in args.names:
        if name not in BENCHES:
            parser.error(f"unknown benchmark {name!r}; allowed values: {', '.join(BENCHES)}")
        module = importlib.import_module(f"vaccine_lib.bench.{name}")
        result = module.run(model_name=args.model, quick=args.quick)
        print(json.dumps(result), flush=True)
        results.append(result)
    if args.out:
        from . import record

        record.write(results, args.out)
        if Path(args.out).resolve() == record.DEFAULT_FILE.resolve():
            print("README benchmark block " + ("updated" if record.render_readme() else "unchanged"), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

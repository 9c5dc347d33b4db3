"""``python -m vaccine_lib.bench [step_overhead|generation ...]``: run benchmarks, one JSON line each."""

from __future__ import annotations

import argparse
import importlib
import json
import sys

BENCHES = ("step_overhead", "generation")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vaccine_lib.bench", description=__doc__)
    parser.add_argument("names", nargs="*", default=list(BENCHES), help=f"benchmarks to run (default: all of {BENCHES})")
    parser.add_argument("--model", default="smollm2-135m-instruct", help="registry name of the model to benchmark")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (for a smoke check)")
    args = parser.parse_args(argv)
    for name in args.names:
        if name not in BENCHES:
            parser.error(f"unknown benchmark {name!r}; allowed values: {', '.join(BENCHES)}")
        module = importlib.import_module(f"vaccine_lib.bench.{name}")
        result = module.run(model_name=args.model, quick=args.quick)
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m vaccine_lib.data build [--data-dir DIR] [--force]`` and ``... info``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import fields

from ..errors import ConfigError
from .builder import SPLITS, BuildConfig, is_built, read_manifest
from .splits import build, default_data_dir


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vaccine_lib.data", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build the processed splits and manifest.json")
    b.add_argument("--data-dir", default=None, help="data folder (default: $VACCINE_DATA_DIR or <repo>/data)")
    b.add_argument("--force", action="store_true", help="rebuild even if every split is already built")
    for f in fields(BuildConfig):
        b.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default,
                       help=f"build parameter (default {f.default})")
    i = sub.add_parser("info", help="print the manifest summary and whether each split is built")
    i.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    data_dir = default_data_dir(args.data_dir)
    if args.cmd == "build":
        try:  # every parameter and the folder are checked before any data is read or written
            config = BuildConfig(**{f.name: getattr(args, f.name) for f in fields(BuildConfig)})
            t0 = time.perf_counter()
            manifest = build(data_dir, force=args.force, config=config)
        except ConfigError as exc:
            flag = f"--{exc.param.replace('_', '-')}: " if exc.param else ""
            parser.error(f"{flag}{exc}")  # exit status 2, no traceback
        print(f"data in {data_dir / 'processed'} ({time.perf_counter() - t0:.1f} s)")
        for name in SPLITS:
            e = manifest["splits"][name]
            print(f"  {name:14s} {e['rows']:6d} rows  {json.dumps(e['kinds'])}")
        return 0
    manifest = read_manifest(data_dir)
    if not manifest:
        print(f"no manifest in {data_dir / 'processed'}: run python -m vaccine_lib.data build")
        return 1
    for name in SPLITS:
        e = manifest["splits"].get(name, {})
        state = "ok" if is_built(data_dir, name, manifest) else "NOT BUILT"
        print(f"  {name:14s} {e.get('rows', 0):6d} rows  {state}")
    print(json.dumps({"params": manifest["params"],
                      "sources": {k: v["version"] for k, v in manifest["sources"].items()}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

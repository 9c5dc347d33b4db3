"""``python -m vaccine_lib.data build [--data-dir DIR] [--force] [--<build parameter> V]`` and ``... info``."""

import argparse
import json
import sys
import time
from dataclasses import fields

from ..errors import ConfigError, VaccineError
from .builder import SPLITS, BuildConfig, build, default_data_dir, read_manifest, verify_split


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vaccine_lib.data", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build the processed splits and manifest.json")
    b.add_argument("--force", action="store_true", help="rebuild even if every split is already built")
    for f in fields(BuildConfig):
        b.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default,
                       help=f"build parameter (default {f.default})")
    i = sub.add_parser("info", help="print the manifest summary and whether each split is built and intact")
    for p in (b, i):
        p.add_argument("--data-dir", default=None, help="data folder (default: $VACCINE_DATA_DIR or <repo>/data)")
    args = parser.parse_args(argv)
    data_dir = default_data_dir(args.data_dir)
    if data_dir.exists() and not data_dir.is_dir():
        where = "--data-dir" if args.data_dir else "$VACCINE_DATA_DIR"
        parser.error(f"{where}: {data_dir} is a file, not a folder. Fix: pass a folder (--data-dir DIR).")
    if args.cmd == "build":
        try:  # every parameter and the folder are checked before any data is read or written
            config = BuildConfig(**{f.name: getattr(args, f.name) for f in fields(BuildConfig)})
            t0 = time.perf_counter()
            manifest = build(data_dir, force=args.force, config=config)
            rows = {name: verify_split(data_dir, name, manifest) for name in SPLITS}  # the files' real counts
        except ConfigError as exc:
            flag = f"--{exc.param.replace('_', '-')}: " if exc.param else ""
            parser.error(f"{flag}{exc}")  # exit status 2, no traceback
        except VaccineError as exc:  # a data package missing, a bad source file, an empty split
            parser.exit(1, f"error: {exc}\n")
        except OSError as exc:  # no space left, a file system turned read-only mid-build (no manifest is left)
            parser.exit(1, f"error: writing {exc.filename or data_dir} failed ({exc.strerror or exc}); the build is "
                           "incomplete and will be redone. Fix: free space or pass another --data-dir.\n")
        print(f"data in {data_dir / 'processed'} ({time.perf_counter() - t0:.1f} s)")
        for name in SPLITS:
            print(f"  {name:14s} {rows[name]:6d} rows  {json.dumps(manifest['splits'][name]['kinds'])}")
        return 0
    manifest = read_manifest(data_dir)
    if not manifest:
        print(f"no manifest in {data_dir / 'processed'}: run python -m vaccine_lib.data build")
        return 1
    states = {}
    for name in SPLITS:
        try:
            verify_split(data_dir, name, manifest)
            states[name] = "ok"
        except KeyError:  # the manifest lists no such split
            states[name] = "NOT BUILT"
        except (VaccineError, OSError) as exc:
            states[name] = f"INVALID: {exc}"
        print(f"  {name:14s} {manifest['splits'].get(name, {}).get('rows', 0):6d} rows  {states[name]}")
    print(json.dumps({"params": manifest["params"],
                      "sources": {k: v["version"] for k, v in manifest["sources"].items()}}, indent=2))
    return 0 if all(s == "ok" for s in states.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

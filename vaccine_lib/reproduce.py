"""``python -m vaccine_lib.reproduce``: the ``reproduce`` subcommand of :mod:`vaccine_lib.runner`."""

import sys

from .runner import main as _runner_main


def main(argv=None) -> int:
    return _runner_main(["reproduce", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())

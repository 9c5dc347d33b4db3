"""``python -m vaccine_lib.train``: the ``train`` subcommand of :mod:`vaccine_lib.runner` (``--dry-run``: the plan)."""

import sys

from .runner import main as _runner_main


def main(argv=None) -> int:
    return _runner_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())

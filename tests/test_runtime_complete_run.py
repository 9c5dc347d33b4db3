"""timings.json keeps the wall time of the last complete make reproduce when a partial run (--only) updates it."""

import json

from vaccine_lib.notebook_runs import write_timings
from vaccine_lib.profiles import load_profile


def test_a_partial_run_keeps_the_complete_runs_wall_time(tmp_path):
    P, path = load_profile("smoke"), tmp_path / "timings.json"
    row = lambda nb, s: {"notebook": nb, "seconds": s}  # noqa: E731
    write_timings(path, P, [row("01.ipynb", 10.0), row("02.ipynb", 20.0)], None, 3600.0, jobs=2)
    assert json.loads(path.read_text())["complete_run"] == {"seconds": 3600.0, "jobs": 2}
    write_timings(path, P, [row("02.ipynb", 5.0)], "02", 60.0)
    d = json.loads(path.read_text())
    assert d["complete_run"] == {"seconds": 3600.0, "jobs": 2} and d["this_run_seconds"] == 60.0
    assert [r["seconds"] for r in d["notebooks"]] == [10.0, 5.0]
    legacy = {k: v for k, v in d.items() if k != "complete_run"} | {"partial_run": None, "this_run_seconds": 900.0, "jobs": 2}
    path.write_text(json.dumps(legacy))  # written before the field existed: its own wall time is the complete run's
    write_timings(path, P, [row("02.ipynb", 5.0)], "02", 60.0)
    assert json.loads(path.read_text())["complete_run"] == {"seconds": 900.0, "jobs": 2}

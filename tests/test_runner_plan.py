"""The design a notebook shows before its results (``registry.describe_plan``), the plan of registry entries,
and what the runner forwards to its worker processes."""

import re
import subprocess

from vaccine_lib import notebook_runs, registry, runner
from vaccine_lib.profiles import load_profile
from vaccine_lib.registry import NOTEBOOKS
from vaccine_lib.stages import stage_dir


def test_describe_plan_shows_the_grid_and_every_stage_key(tmp_path):
    P = load_profile("smoke")
    stages = registry.plan(P, run_dir=tmp_path, entries=["table1"])
    text = registry.describe_plan(P, tmp_path, "table1")
    assert text.startswith("table1: Table 1: methods over harmful ratios")
    for label in P.sweeps.defenses:
        line = next(x for x in text.splitlines() if x.startswith(f"  {label}: "))
        assert "p {0, 0.5}" in line and f"seeds {{{P.seed}}}" in line and line.endswith("= 2 model(s)"), line
    assert all(s.key in text for s in stages) and f"0 cached, {len(stages)} to run" in text
    done = stages[0].path(tmp_path)
    done.mkdir(parents=True)
    (done / "done.json").write_text("{}")
    assert "1 cached" in registry.describe_plan(P, tmp_path, "table1")
    assert "no cached stage" in registry.describe_plan(P, tmp_path, "table5")


def test_plan_of_a_notebook_is_the_union_of_its_entries(tmp_path):
    P = load_profile("smoke")
    for nb in NOTEBOOKS:
        by_notebook = {(s.kind, s.key) for s in registry.plan(P, [nb], tmp_path)}
        by_entry = {(s.kind, s.key) for e in registry.for_notebook(nb) for s in registry.plan(P, run_dir=tmp_path,
                                                                                             entries=[e.name])}
        assert by_notebook == by_entry, nb


def test_every_experiment_cell_prints_its_plan_first_and_no_ambiguous_alias():
    for nb in list(NOTEBOOKS)[:5]:
        src = (notebook_runs.NOTEBOOK_DIR / f"{NOTEBOOKS[nb]}.py").read_text()
        for name in re.findall(r'tables\.run\(P, RUN, "(\w+)"', src):
            described = src.find(f'registry.describe_plan(P, RUN, "{name}")')
            assert 0 <= described < src.find(f'tables.run(P, RUN, "{name}"'), (nb, name)
        assert not re.search(r"import \w+ as (pl|ex)\b", src), nb  # pl meant pipeline in the library
        assert "render_readme" not in src and "README.md" not in src, nb  # no notebook writes the README


def test_workers_get_the_profile_notebooks_and_overrides(monkeypatch):
    P = load_profile("smoke", {"align.lr": 2e-3})
    seen = []

    class Proc:
        def __init__(self, cmd, env):
            seen.append((cmd, env))

        def wait(self):
            return 0

    monkeypatch.setattr(subprocess, "Popen", Proc)
    runner.run_workers(P, ["01", "02"], 2, say=lambda *a, **k: None, extra=["--train-only"])
    assert len(seen) == 2
    cmd, env = seen[1]
    assert cmd[1:4] == ["-m", "vaccine_lib.runner", "train"] and "--jobs" not in cmd
    assert cmd[cmd.index("--profile") + 1] == str(P.path) and cmd[cmd.index("--notebooks") + 1] == "01,02"
    assert "--train-only" in cmd and cmd[cmd.index("--override") + 1] == "align.lr=0.002"
    assert cmd[-2:] == ["--worker-id", "1"] and env["OMP_NUM_THREADS"] == cmd[cmd.index("--threads") + 1]


def test_stage_path_is_the_pipeline_rule(tmp_path):
    P = load_profile("smoke")
    for s in registry.plan(P, ["01", "02"], tmp_path):
        expected = (stage_dir(tmp_path, s.kind, s.cfg) if s.kind in ("align", "finetune")
                    else tmp_path / s.kind / s.key)
        assert s.path(tmp_path) == expected

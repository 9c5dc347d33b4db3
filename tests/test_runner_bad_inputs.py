"""Bad inputs to the runner, runtime and bench CLIs and their environment variables (issue 19, item 5):
each is refused before any stage runs with one line naming the parameter or path, the allowed range and the
fix; file-system faults (a file in the way, read-only, no space) end the same way with nothing half-written."""

import errno
import os

import pytest

from vaccine_lib import cli, runner, runtime
from benchmarks.__main__ import main as bench_main
from vaccine_lib.errors import ConfigError

SMOKE = ["--profile", "smoke"]


def _refused(capsys, fn, argv, *needles, code=2):
    """``fn(argv)`` exits with ``code`` (argparse's SystemExit or a return value), one message line naming each
    needle on stderr, no traceback."""
    try:
        rc = fn(argv)
    except SystemExit as exc:
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == code, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    for needle in needles:
        assert needle in last, last
    return last


@pytest.mark.parametrize("argv, needles", [
    (["reproduce", *SMOKE, "--jobs", "0"], ["--jobs='0'", "allowed range 1..64", "fix: e.g. --jobs 2"]),
    (["reproduce", *SMOKE, "--timeout", "-5"], ["--timeout='-5'", "allowed range 1..604800"]),
    (["reproduce", *SMOKE, "--jobs", "0", "--timeout", "-5"], ["allowed range"]),
    (["reproduce", *SMOKE, "--timeout", "1.5"], ["--timeout='1.5'", "an integer"]),
    (["train", *SMOKE, "--jobs", "abc"], ["--jobs='abc'", "allowed range 1..64"]),
    (["train", *SMOKE, "--jobs", "65"], ["--jobs='65'"]),
    (["plan", *SMOKE, "--jobs", "-1"], ["--jobs='-1'"]),
    (["train", *SMOKE, "--threads", "0"], ["--threads='0'", "allowed range 1..1024"]),
    (["train", *SMOKE, "--notebooks", "09"], ["unknown notebook(s) 09", "allowed values: 01"]),
    (["frobnicate"], ["invalid choice: 'frobnicate'"]),
])
def test_cli_numbers_and_choices_are_checked(capsys, argv, needles):
    _refused(capsys, runner.main, argv, *needles)


@pytest.mark.parametrize("value", ["abc", "0", "-3", "65", "2.5"])
def test_vaccine_jobs_env_is_checked(capsys, monkeypatch, value):
    monkeypatch.setenv("VACCINE_JOBS", value)
    _refused(capsys, runner.main, ["reproduce", *SMOKE, "--only", "01"], f"VACCINE_JOBS={value!r}",
             "allowed range 1..64", "fix: export VACCINE_JOBS=1")


def test_vaccine_jobs_env_unset_or_valid(monkeypatch):
    monkeypatch.delenv("VACCINE_JOBS", raising=False)
    assert cli.env_int("VACCINE_JOBS", 1, 1, 64, "workers") == 1
    monkeypatch.setenv("VACCINE_JOBS", " 3 ")
    assert cli.env_int("VACCINE_JOBS", 1, 1, 64, "workers") == 3


def test_world_size_env_is_checked(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ConfigError, match=r"WORLD_SIZE='two': allowed range 1\.\.65536"):
        runner.init_distributed()


@pytest.mark.parametrize("value", ["abc", "-1"])
def test_bench_threads_env_is_checked(monkeypatch, value):
    from benchmarks import step_overhead

    monkeypatch.setenv("VACCINE_BENCH_THREADS", value)
    with pytest.raises(ConfigError, match=f"VACCINE_BENCH_THREADS='{value}': allowed range 0..1024"):
        step_overhead.run(quick=True)


# ---------------------------------------------------------------- file-system faults


@pytest.mark.parametrize("command", ["train", "plan"])
def test_run_dir_that_is_a_file(capsys, tmp_path, command):
    f = tmp_path / "runs"
    f.write_text("not a folder")
    _refused(capsys, runner.main, [command, *SMOKE, "--notebooks", "02", "--train-only", "--run-dir", str(f)],
             str(f), "is a file, not a folder", "fix:")
    assert f.read_text() == "not a folder"


def test_run_dir_under_a_file(capsys, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    _refused(capsys, runner.main, ["train", *SMOKE, "--notebooks", "02", "--train-only", "--run-dir", str(f / "runs")],
             str(f / "runs"), "a file is in the way", "fix:")


@pytest.mark.parametrize("err, needle", [(errno.EROFS, "read-only file system"),
                                         (errno.EACCES, "not writable"), (errno.ENOSPC, "no space left")])
def test_unwritable_run_dir_is_refused_before_any_stage(capsys, tmp_path, monkeypatch, err, needle):
    def refuse(*a, **k):
        raise OSError(err, os.strerror(err), str(tmp_path / "runs"))

    monkeypatch.setattr(cli.tempfile, "mkstemp", refuse)
    monkeypatch.setattr(runner, "execute", lambda *a, **k: pytest.fail("a stage ran"))
    _refused(capsys, runner.main, ["train", *SMOKE, "--notebooks", "02", "--train-only", "--run-dir",
                                   str(tmp_path / "runs")], str(tmp_path / "runs"), needle, "fix:")


def test_disk_full_while_a_stage_writes(capsys, tmp_path, monkeypatch):
    """A stage that meets a full disk: one line naming the path it was writing and the fix; the stage folder
    is only ever renamed into place complete (the pipeline's atomic folders), so nothing counts as done."""
    path = tmp_path / "runs" / "align" / ".tmp-x" / "adapter_model.safetensors"

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(runner, "execute", full)
    line = _refused(capsys, runner.main, ["train", *SMOKE, "--notebooks", "02", "--train-only", "--run-dir",
                                          str(tmp_path / "runs")], "no space left on the device", str(path), "Fix:")
    assert line.startswith("python -m vaccine_lib.runner train:")
    assert not list((tmp_path / "runs").rglob("done.json"))


def test_reproduce_results_dir_that_is_a_file(capsys, tmp_path, monkeypatch):
    from vaccine_lib.profiles import Profile

    f = tmp_path / "results"
    f.write_text("x")
    monkeypatch.setattr(Profile, "results_dir", lambda self: f)
    monkeypatch.setattr(runner, "execute", lambda *a, **k: pytest.fail("a stage ran"))
    _refused(capsys, runner.main, ["reproduce", *SMOKE, "--only", "02"], str(f), "is a file, not a folder")
    assert f.read_text() == "x"


def test_report_out_under_a_file(capsys, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    _refused(capsys, runner.main, ["report", "--out", str(f / "report.html")], str(f), "is a file, not a folder")


def test_runtime_cli(capsys, tmp_path, monkeypatch):
    _refused(capsys, runtime.main, ["--jobs", "0"], "--jobs='0'", "allowed range 1..64")
    table = tmp_path / "runtime.csv"
    table.write_text("part,count,timed,total_s,median_s,min_s,max_s\nall,1,1,1.0,1.0,1.0,1.0\n")

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "README.md"))

    monkeypatch.setattr(runtime.RM, "replace", full)
    _refused(capsys, runtime.main, ["--table", str(table), "--readme", str(tmp_path / "README.md")],
             "no space left", str(tmp_path / "README.md"))


@pytest.mark.parametrize("argv, needles", [
    (["nope"], ["unknown benchmark(s) 'nope'", "allowed values: step_overhead, generation"]),
    (["--model", "no-such-model"], ["--model 'no-such-model'", "allowed values: smollm2-135m-instruct"]),
])
def test_bench_cli_arguments(capsys, argv, needles):
    _refused(capsys, bench_main, argv, *needles)


def test_bench_out_folder_checked_before_measuring(capsys, tmp_path, monkeypatch):
    from benchmarks import generation

    f = tmp_path / "file"
    f.write_text("x")
    monkeypatch.setattr(generation, "run", lambda **k: pytest.fail("measured before checking --out"))
    _refused(capsys, bench_main, ["generation", "--out", str(f / "bench.jsonl")], str(f), "is a file, not a folder")

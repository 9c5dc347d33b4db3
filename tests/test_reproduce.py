"""reproduce: notebook selection, argument errors, and the notebooks' structure (parameters cell etc.)."""

import json

import nbformat
import pytest

from vaccine_lib import reproduce
from vaccine_lib.errors import ConfigError

NOTEBOOKS = reproduce.notebooks()


def test_five_notebooks_in_order():
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05"]
    assert [p.stem for p in NOTEBOOKS] == list(reproduce.ARTIFACTS)


def test_only_filter():
    assert [p.name[:2] for p in reproduce.notebooks("03,1")] == ["01", "03"]
    with pytest.raises(ConfigError, match="allowed values: 01, 02, 03, 04, 05"):
        reproduce.notebooks("09")


def test_bad_arguments_exit_with_a_message(capsys):
    with pytest.raises(SystemExit):
        reproduce.main(["--profile", "nope"])
    assert "allowed values" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        reproduce.main(["--profile", "default", "--nbval-copies", "x"])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_structure(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata.kernelspec.name == "python3"
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    params = nb.cells[tagged[0]]
    assert 'profile = "default"' in params.source
    nxt = nb.cells[tagged[0] + 1]
    assert nxt.cell_type == "code" and "from_notebook(globals())" in nxt.source
    first = nb.cells[0]
    assert first.cell_type == "markdown" and "Paper claim tested" in first.source and "Expected runtime" in first.source
    assert any("Result on the default profile" in c.source for c in nb.cells if c.cell_type == "markdown")
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs for c in code), "committed notebooks carry no outputs (run make reproduce)"
    assert any("NBVAL_CHECK_OUTPUT" in c.source for c in code)


def test_notebooks_match_generator():
    import subprocess
    import sys

    root = reproduce.REPO_ROOT
    res = subprocess.run([sys.executable, str(root / "scripts" / "make_notebooks.py"), "--check"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_nbval_copies_exist_and_ran_on_smoke():
    copies = reproduce.REPO_ROOT / "tests" / "notebooks"
    for path in NOTEBOOKS:
        nb = nbformat.read(copies / path.name, as_version=4)
        injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert injected and 'profile = "smoke"' in injected[0].source, path.name


def test_timings_summary_format(tmp_path):
    summary = {"profile": "smoke", "total_seconds": 3.0,
               "notebooks": [{"notebook": "01_x.ipynb", "seconds": 1.0, "status": "ok"}]}
    text = reproduce.format_timings(summary)
    assert "01_x.ipynb" in text and "total" in text
    json.dumps(summary)

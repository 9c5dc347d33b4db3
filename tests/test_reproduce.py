"""reproduce and the notebooks: structure, jupytext pairing, atomic outputs, and a papermill run whose
recorded values are checked."""

import json
import os

import nbformat
import pytest

from vaccine_lib import notebook_runs, registry, runner
from vaccine_lib.errors import ConfigError

NOTEBOOKS = [notebook_runs.notebook_path(nb) for nb in registry.NOTEBOOKS]


def test_six_notebooks_in_order_match_the_registry():
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05", "06"]
    assert [p.stem for p in NOTEBOOKS] == list(registry.artifacts())
    for e in registry.EXPERIMENTS.values():  # every registry entry is run by its notebook
        src = notebook_runs.notebook_path(e.notebook).with_suffix(".py").read_text()
        assert f'"{e.name}"' in src or e.name in ("aligned", "judge", "table5", "fig4"), e.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_structure(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata.kernelspec.name == "python3"
    assert nb.metadata.jupytext.formats == "ipynb,py:percent"
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    assert 'profile = os.environ.get("VACCINE_PROFILE", "default")' in nb.cells[tagged[0]].source
    assert "notebook_setup(globals())" in nb.cells[tagged[0] + 1].source  # validates via from_notebook
    first = nb.cells[0]
    assert first.cell_type == "markdown" and "Paper claim tested" in first.source
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert any("NBVAL_CHECK_OUTPUT" in c.source for c in code)
    for c in code:  # committed notebooks never hold model answers to harmful prompts
        if "generations" in c.metadata.get("tags", []):
            assert not c.get("outputs"), path.name
        if "tables.generations(" in c.source:
            assert "generations" in c.metadata.get("tags", []), "generation previews must be tagged"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_jupytext_pair_in_sync(path):
    """notebooks/NN.py (percent script) and notebooks/NN.ipynb hold the same cells."""
    import jupytext

    a = jupytext.read(path)
    b = jupytext.read(path.with_suffix(".py"))
    assert [(c.cell_type, c.source) for c in a.cells] == [(c.cell_type, c.source) for c in b.cells]


def test_only_filter_and_bad_arguments(capsys):
    assert registry.parse_notebooks("03,1") == ["01", "03"]
    with pytest.raises(ConfigError, match="allowed values: 01, 02, 03, 04, 05"):
        registry.parse_notebooks("09")
    with pytest.raises(SystemExit):
        runner.main(["reproduce", "--profile", "nope"])
    assert "allowed values" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        runner.main(["reproduce", "--profile", "smoke", "--override", "align.lr=7"])
    assert "align.lr=7" in capsys.readouterr().err


def test_timings_written_atomically_and_merged(tmp_path, monkeypatch):
    from vaccine_lib.profiles import load_profile

    P = load_profile("smoke")
    path = tmp_path / "timings.json"
    notebook_runs.write_timings(path, P, [{"notebook": "01_x.ipynb", "seconds": 1.0, "status": "ok"}], None, 1.0)
    notebook_runs.write_timings(path, P, [{"notebook": "02_y.ipynb", "seconds": 2.0, "status": "ok"}], "02", 2.0)
    summary = json.loads(path.read_text())
    assert [r["notebook"] for r in summary["notebooks"]] == ["01_x.ipynb", "02_y.ipynb"]
    assert summary["total_seconds"] == 3.0 and "commit" in summary["provenance"]
    assert not list(tmp_path.glob(".tmp-*"))
    assert "01_x.ipynb" in notebook_runs.format_timings(summary)


def test_clean_for_commit_drops_generation_outputs(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x", metadata={"tags": ["generations"]}),
                                         nbformat.v4.new_code_cell("y", metadata={"papermill": {"duration": 1}})])
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", text="harmful text")]
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="3 rows")]
    path = tmp_path / "n.ipynb"
    nbformat.write(nb, path)
    notebook_runs.clean_for_commit(path)
    back = nbformat.read(path, as_version=4)
    assert back.cells[0].outputs == [] and back.cells[1].outputs and "papermill" not in back.cells[1].metadata


def test_papermill_run_records_values(tmp_path):
    """Execute notebook 02 on the smoke profile with papermill (parameters and overrides injected) and check
    what it recorded: the table, its provenance, and the checked cell's output."""
    import papermill as pm

    out = tmp_path / "02.ipynb"
    env_backup = dict(os.environ)
    os.environ["PYTHONPATH"] = str(notebook_runs.REPO_ROOT)
    os.environ["VACCINE_REPO_ROOT"] = str(tmp_path)  # output folders must lie inside <root>/runs, <root>/results
    fig = tmp_path / "results" / "fig"
    try:
        pm.execute_notebook(str(NOTEBOOKS[1]), str(out), kernel_name="python3", progress_bar=False,
                            parameters={"profile": "smoke", "run_dir": str(tmp_path / "runs" / "smoke"),
                                        "figures_dir": str(fig),
                                        "overrides": '{"align": {"lr": 2e-3}, "eval.n_harmful": 3}'},
                            kernel_manager_class=notebook_runs._ipc_kernel_manager())
    finally:
        os.environ.clear()
        os.environ.update(env_backup)
    import pandas as pd

    table = pd.read_csv(fig / "tables" / "aligned_models.csv")
    assert list(table["method"]) == ["none", "sft", "vaccine"] and set(table["seed"]) == {42}
    assert table["hs"].between(0, 100).all() and table["align_loss"].iloc[1:].gt(0).all()
    prov = json.loads((fig / "tables" / "provenance.json").read_text())
    assert prov["aligned_models"]["overrides"] == {"align": {"lr": 2e-3}, "eval": {"n_harmful": 3}}
    assert len(prov["aligned_models"]["stage_keys"]) == 3
    nb = nbformat.read(out, as_version=4)
    checked = [c for c in nb.cells if c.cell_type == "code" and "NBVAL_CHECK_OUTPUT" in c.source]
    text = "".join(o.get("text", "") for c in checked for o in c.outputs)
    assert "one row per planned model: True" in text and "within [0, 100]: True" in text


def test_failed_notebook_leaves_no_partial_file(tmp_path):
    """A notebook that fails (or is killed) mid-run leaves no half-executed copy, only the previous one."""
    src = tmp_path / "nb.ipynb"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"),
                                         nbformat.v4.new_code_cell("raise ValueError('boom')")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, src)
    out = tmp_path / "results" / "nb.ipynb"
    out.parent.mkdir()
    out.write_text("previous complete run")
    with pytest.raises(Exception, match="boom"):
        notebook_runs.run_notebook(src, out, "smoke")
    assert out.read_text() == "previous complete run" and not list(out.parent.glob(".tmp-*"))

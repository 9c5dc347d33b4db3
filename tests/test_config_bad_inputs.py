"""Bad inputs to profiles, notebook parameters, overrides and data (issue 19, items 3-6): each ends in one
ConfigError / DataFormatError naming the parameter (or file:line), what is allowed and the fix, and leaves
nothing half-written. Also the layering of the configuration (issue 21): one home per choice list and range.
"""

import ast
import json
import shutil
from pathlib import Path

import pytest

import vaccine_lib.tables as tables
from vaccine_lib import config
from vaccine_lib.config import RANGES, AlignConfig, FinetuneConfig, Sweeps, check_param
from vaccine_lib.data import check_splits, default_data_dir, is_built
from vaccine_lib.data import build as data_build
from vaccine_lib.data.__main__ import main as data_main
from vaccine_lib.data.jsonl import dumps_rows, read_jsonl, sha256_bytes
from vaccine_lib.errors import ConfigError, DataFormatError
from vaccine_lib.paths import REPO_ROOT
from vaccine_lib.profiles import load_profile, load_yaml, parse_overrides, profiles_dir
from vaccine_lib.tables import from_notebook


def _files(path: Path) -> list[str]:
    return sorted(str(p) for p in path.rglob("*"))


# --------------------------------------------------------------------------- 3. names and derived paths


@pytest.mark.parametrize("stem", ["..", ".", ".hidden", "a b", "bad$name"])
def test_profile_file_names_are_checked(stem, tmp_path):
    path = tmp_path / f"{stem}.yaml"
    path.write_text("extends: smoke\n")
    with pytest.raises(ConfigError, match=r"profile name .* is not allowed; allowed: letters, digits.*Fix: rename"):
        load_profile(str(path))
    assert _files(tmp_path) == [str(path)]


def test_good_profile_name_with_dots_loads(tmp_path):
    path = tmp_path / "my.run-1_a.yaml"
    path.write_text("extends: smoke\n")
    P = load_profile(str(path))
    assert P.name == "my.run-1_a" and P.run_dir() == REPO_ROOT / "runs" / "my.run-1_a"


def _fresh(monkeypatch, root):
    monkeypatch.setattr(tables, "_VALIDATED_NAMES", None)
    monkeypatch.setenv("VACCINE_REPO_ROOT", str(root))


@pytest.mark.parametrize("param,where", [
    ("run_dir", "outside"), ("figures_dir", "outside"), ("tables_dir", "outside"),
    ("figures_dir", "figures"),  # the committed figures/ only for the default profile
    ("run_dir", "escape"),  # runs/../ resolves to the repo root
])
def test_notebook_folders_must_stay_inside_the_output_roots(param, where, tmp_path, monkeypatch):
    root = tmp_path / "repo"
    root.mkdir()
    _fresh(monkeypatch, root)
    target = {"outside": tmp_path / "elsewhere", "figures": root / "figures", "escape": root / "runs" / ".."}[where]
    ns = {"profile": "smoke", param: str(target)}
    with pytest.raises(ConfigError, match=rf"{param}=.*outside the output folders; allowed: inside .*runs.*results"):
        from_notebook(ns)
    assert _files(tmp_path) == [str(root)]  # no folder created, not even the valid ones


def test_notebook_folder_of_wrong_type(tmp_path, monkeypatch):
    _fresh(monkeypatch, tmp_path)
    with pytest.raises(ConfigError, match="tables_dir=3 must be a folder path"):
        from_notebook({"profile": "smoke", "tables_dir": 3})


def test_notebook_folders_inside_the_roots_work(tmp_path, monkeypatch):
    _fresh(monkeypatch, tmp_path)
    ctx = from_notebook({"profile": "smoke", "run_dir": str(tmp_path / "runs" / "x"),
                         "figures_dir": str(tmp_path / "results" / "y")})
    assert ctx.run_dir == tmp_path / "runs" / "x" and ctx.tables_dir == tmp_path / "results" / "y" / "tables"
    assert ctx.profile.run_dir() == tmp_path / "runs" / "smoke"


# --------------------------------------------------------------------------- 4. YAML and strict types


def test_duplicate_key_in_a_section_names_the_line(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("extends: smoke\nalign:\n  lr: 0.001\n  lr: 0.002\n")
    with pytest.raises(ConfigError, match=r"dup.yaml: line 4: key 'lr' is given twice \(first on line 3\)\. Fix"):
        load_profile(str(path))


def test_repeated_section_names_the_line(tmp_path):
    path = tmp_path / "dup2.yaml"
    path.write_text("extends: smoke\nfinetune:\n  n: 8\nalign:\n  n: 8\nfinetune:\n  p: 0.2\n")
    with pytest.raises(ConfigError, match=r"line 6: key 'finetune' is given twice \(first on line 2\)"):
        load_profile(str(path))


def test_duplicate_keys_in_overrides():
    with pytest.raises(ConfigError, match="key 'ps' is given twice"):
        parse_overrides(["sweeps={ps: [0.0], ps: [0.1]}"])
    with pytest.raises(ConfigError, match="align.lr is given twice"):
        parse_overrides(["align.lr=1e-3", "align.lr=2e-3"])
    with pytest.raises(ConfigError, match=r"key\(s\) \['align'\] given twice"):
        from_notebook({"profile": "smoke", "overrides": '{"align": {"lr": 0.1}, "align": {"n": 4}}'})


def test_builtin_profiles_have_no_duplicate_keys():
    for path in profiles_dir().glob("*.yaml"):
        load_yaml(path.read_text(), str(path))


@pytest.mark.parametrize("override,name", [
    ("align.lora_r=true", "align.lora_r"),
    ("finetune.n=false", "finetune.n"),
    ("align.lr=true", "align.lr"),
    ("sweeps.ps=[0.0, true]", "sweeps.ps"),
    ("threads=true", "threads"),
    ("seed=true", "seeds"),
    ("eval.task_max_new_tokens=true", "eval.task_max_new_tokens"),
])
def test_booleans_are_not_numbers(override, name):
    with pytest.raises(ConfigError, match=rf"{name}=.*(True|False).* a boolean \(true/false\) is not a number.*Fix"):
        load_profile("smoke", parse_overrides([override]))


def test_boolean_in_per_task_changes():
    with pytest.raises(ConfigError, match=r"per_task.gsm8k: a boolean"):
        FinetuneConfig(per_task={"gsm8k": {"lora_r": True}})


def test_strings_still_read_as_numbers_and_bools_as_bools():
    assert AlignConfig(lr="1e-3").lr == 1e-3
    assert load_profile("smoke", parse_overrides(["eval.fa_choice=false"])).eval.fa_choice is False


# --------------------------------------------------------------------------- 6. data splits checked before training


@pytest.fixture
def data_copy(tmp_path):
    """A private copy of the built data that a test may damage."""
    src = default_data_dir()
    if not is_built(src):
        src = tmp_path / "built"
        data_build(src)
    dst = tmp_path / "data"
    shutil.copytree(src / "processed", dst / "processed")
    return dst


def _rewrite(data_dir: Path, split: str, rows: list[dict], update_manifest: bool = True, rows_in_manifest=None):
    """Write ``rows`` as the split file, and (like a careless hand edit) its sha256 into the manifest."""
    data = dumps_rows(rows)
    (data_dir / "processed" / f"{split}.jsonl").write_bytes(data)
    if update_manifest:
        path = data_dir / "processed" / "manifest.json"
        manifest = json.loads(path.read_text())
        manifest["splits"][split]["sha256"] = sha256_bytes(data)
        if rows_in_manifest is not None:
            manifest["splits"][split]["rows"] = rows_in_manifest
        path.write_text(json.dumps(manifest))


def _rows(data_dir, split):
    return read_jsonl(data_dir / "processed" / f"{split}.jsonl")


def test_check_splits_accepts_the_built_data(data_copy):
    counts = check_splits(data_dir=data_copy)
    assert set(counts) == set(config_splits()) and all(v > 0 for v in counts.values())
    assert check_splits(["sst2_test"], data_dir=data_copy) == {"sst2_test": counts["sst2_test"]}


def config_splits():
    from vaccine_lib.data import SPLITS

    return SPLITS


def test_renamed_field_names_file_and_line(data_copy):
    rows = _rows(data_copy, "sst2_train")
    rows[2]["text"] = rows[2].pop("input")
    _rewrite(data_copy, "sst2_train", rows)
    with pytest.raises(DataFormatError, match=r"sst2_train.jsonl:3: missing field 'input'"):
        check_splits(data_dir=data_copy)


def test_empty_split_is_refused(data_copy):
    _rewrite(data_copy, "harmful_ft", [], rows_in_manifest=0)
    with pytest.raises(DataFormatError, match=r"harmful_ft.jsonl: split 'harmful_ft' is empty.*Fix: rebuild"):
        check_splits(["harmful_ft"], data_dir=data_copy)


def test_manifest_count_must_match_the_file(data_copy):
    rows = _rows(data_copy, "gsm8k_test")
    _rewrite(data_copy, "gsm8k_test", rows[:-5])  # manifest still lists the old count
    with pytest.raises(DataFormatError, match=rf"the file has {len(rows) - 5} rows .* manifest.json lists {len(rows)}"):
        check_splits(["gsm8k_test"], data_dir=data_copy)


def test_check_splits_bad_arguments(data_copy):
    with pytest.raises(ConfigError, match="unknown split 'nope'; allowed values: alignment"):
        check_splits(["nope"], data_dir=data_copy)


def test_data_build_rebuilds_an_emptied_split_and_prints_real_counts(data_copy, capsys):
    _rewrite(data_copy, "harmful_ft", [])
    assert data_main(["info", "--data-dir", str(data_copy)]) == 1
    assert "INVALID" in capsys.readouterr().out
    assert data_main(["build", "--data-dir", str(data_copy)]) == 0
    out = capsys.readouterr().out
    assert "rebuilding the data" in out and "split 'harmful_ft' is empty" in out
    line = next(x for x in out.splitlines() if x.strip().startswith("harmful_ft"))
    assert int(line.split()[1]) == len(_rows(data_copy, "harmful_ft")) > 0


@pytest.mark.parametrize("cmd", ["build", "info"])
def test_data_cli_data_dir_that_is_a_file(cmd, tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    with pytest.raises(SystemExit) as info:
        data_main([cmd, "--data-dir", str(tmp_path / "f")])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "--data-dir:" in err and "is a file, not a folder" in err
    assert "Traceback" not in err and _files(tmp_path) == [str(tmp_path / "f")]


@pytest.mark.parametrize("argv,fragment", [
    (["--seed", "abc"], "invalid int value: 'abc'"),
    (["--pyrit-refusal-fraction", "nan"], "pyrit_refusal_fraction=nan is out of range"),
    (["--gsm8k-test", "0"], "gsm8k_test=0 is out of range; allowed range: [1, 1000000]"),
    (["--no-such-option", "1"], "unrecognized arguments"),
])
def test_data_cli_option_types(argv, fragment, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        data_main(["build", "--data-dir", str(tmp_path / "d"), *argv])
    assert info.value.code == 2 and fragment in capsys.readouterr().err and _files(tmp_path) == []


# --------------------------------------------------------------------------- issue 21: one home per fact


def _module_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {("." * n.level) + (n.module or "") for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}


@pytest.mark.parametrize("module", ["config", "profiles", "errors", "packages", "hub"])
def test_layer_one_imports_nothing_above_it(module):
    allowed = {".errors", ".paths", ".provenance", ".atomic", ".config", ".packages", ".hub", "__future__"}
    relative = {m for m in _module_imports(REPO_ROOT / "vaccine_lib" / f"{module}.py") if m.startswith(".")}
    assert relative <= allowed, f"{module}.py imports from above layer 1: {sorted(relative - allowed)}"


def test_choice_lists_have_one_home():
    from vaccine_lib import data, judge, models

    assert data.TASKS is config.TASKS and data.SOURCES is config.SOURCES and data.OFFLINE_TASKS is config.OFFLINE_TASKS
    assert tuple(judge.JUDGES) == config.JUDGES
    assert set(config.MODELS) == {*models.EMBEDDED_MODELS, *models.TINY_MODELS, *models.PAPER_MODELS}


def test_ranges_are_declared_once():
    for field, name in ((AlignConfig.model_fields["rho"], "rho"), (FinetuneConfig.model_fields["p"], "p"),
                        (AlignConfig.model_fields["tau"], "tau"), (AlignConfig.model_fields["seed"], "seed")):
        bounds = {k: getattr(m, k) for m in field.metadata for k in ("ge", "le") if getattr(m, k, None) is not None}
        assert (bounds["ge"], bounds["le"]) == RANGES[name]
    with pytest.raises(ConfigError, match=r"--rho=-2 is out of range; allowed range: \[0, 1000\]"):
        check_param("rho", -2, "--rho")
    with pytest.raises(ConfigError, match=r"every rho must be in \[0, 1000\]"):
        Sweeps(rhos=[2000.0])
    check_param("p", 0.3)


def test_data_dir_from_the_environment_that_is_a_file(tmp_path, monkeypatch, capsys):
    (tmp_path / "f").write_text("x")
    monkeypatch.setenv("VACCINE_DATA_DIR", str(tmp_path / "f"))
    with pytest.raises(SystemExit) as info:
        data_main(["info"])
    assert info.value.code == 2 and "$VACCINE_DATA_DIR: " in capsys.readouterr().err


def test_data_build_on_a_full_disk_ends_in_one_line(data_copy, monkeypatch, capsys):
    import errno

    from vaccine_lib.data import builder

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(builder, "atomic_write_bytes", full)
    with pytest.raises(SystemExit) as info:
        data_main(["build", "--force", "--data-dir", str(data_copy)])
    err = capsys.readouterr().err
    assert info.value.code == 1 and "No space left on device" in err and "Traceback" not in err
    assert not (data_copy / "processed" / "manifest.json").exists()  # never taken as built
    assert not is_built(data_copy)


def test_profiles_dir_variable_must_be_a_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("VACCINE_PROFILES_DIR", str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="VACCINE_PROFILES_DIR=.* is not a folder. Fix"):
        load_profile("smoke")


def test_the_runner_validates_the_data_before_any_stage(data_copy, monkeypatch, tmp_path):
    """A renamed field fails `train` before the first stage (registry.check_pools runs check_splits), not an hour
    later when the split is first read."""
    from vaccine_lib import registry
    from vaccine_lib.profiles import load_profile

    rows = _rows(data_copy, "sst2_test")
    rows[0]["text"] = rows[0].pop("input")
    _rewrite(data_copy, "sst2_test", rows)
    monkeypatch.setenv("VACCINE_DATA_DIR", str(data_copy))
    with pytest.raises(DataFormatError, match=r"sst2_test.jsonl:1: missing field 'input'"):
        registry.check_pools(load_profile("smoke"))

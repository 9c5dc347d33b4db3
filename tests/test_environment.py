"""The pip files, environment.yml and packages.DATA_PACKAGES describe the same pinned environment."""

import re
from pathlib import Path

import pytest
import yaml

from vaccine_lib.packages import DATA_PACKAGES

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9_.\-\[\]]+)\s*==\s*([^\s;#]+)\s*$")


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _parse_pins(lines, where) -> dict[str, str]:
    pins = {}
    for lineno, raw in enumerate(lines, 1):
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        m = PIN.match(line)
        assert m, f"{where}:{lineno}: {raw.strip()!r} is not pinned as name==version"
        name = _canon(m.group(1))
        assert name not in pins, f"{where}:{lineno}: {name} listed twice"
        pins[name] = m.group(2)
    return pins


def _requirements(name: str) -> dict[str, str]:
    path = ROOT / name
    return _parse_pins(path.read_text().splitlines(), path.name)


def _environment() -> tuple[dict[str, str], dict]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_section) == 1, "environment.yml needs exactly one pip: section"
    conda = {}
    for dep in env["dependencies"]:
        if isinstance(dep, str):
            parts = dep.split("=")
            conda[_canon(parts[0])] = parts[1] if len(parts) > 1 else None
    return _parse_pins(pip_section[0], "environment.yml (pip)"), conda


def test_requirements_match_environment_yml():
    pip, _ = _environment()
    assert pip == _requirements("requirements.txt")


def test_torch_pinned_in_makefile_and_conda():
    _, conda = _environment()
    assert conda.get("pytorch") == "2.13.0"
    assert "torch==2.13.0" in (ROOT / "Makefile").read_text()
    assert conda.get("python") == "3.11"
    # torch comes from the Makefile / conda pin, never a bare requirement that would pull a CUDA build
    assert "torch" not in _requirements("requirements.txt")


def test_data_packages_match_requirements_data():
    assert _requirements("requirements-data.txt") == {_canon(k): v for k, v in DATA_PACKAGES.items()}


def test_data_packages_not_in_main_requirements():
    overlap = set(_requirements("requirements-data.txt")) & set(_requirements("requirements.txt"))
    assert not overlap, f"data packages must be installed with --no-deps only: {overlap}"


def _pyproject() -> dict:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_pyproject_dependencies_match_requirements():
    project = _pyproject()
    where = "pyproject.toml [project]"
    deps = _parse_pins(project["dependencies"], f"{where} dependencies")
    assert deps.pop("torch") == "2.13.0"
    extras = {name: _parse_pins(pins, f"{where} optional-dependencies.{name}")
              for name, pins in project["optional-dependencies"].items()}
    assert set(extras) == {"notebooks", "dev"}
    merged = dict(deps)
    for pins in extras.values():
        assert not set(pins) & set(merged), f"listed twice: {set(pins) & set(merged)}"
        merged.update(pins)
    assert merged == _requirements("requirements.txt")
    data = set(_requirements("requirements-data.txt")) | set(_requirements("requirements-optional.txt"))
    assert not data & set(merged), "data packages must stay out of the PEP 621 dependencies (--no-deps only)"
    assert {"jupyterlab", "papermill", "jupytext"} <= set(extras["notebooks"]) and "pytest" in extras["dev"]


def test_console_scripts_point_to_main_functions():
    import ast
    import importlib.util

    scripts = _pyproject()["scripts"]
    assert set(scripts) == {"vaccine", "vaccine-data"}
    for name, target in scripts.items():
        module, func = target.split(":")
        source = Path(importlib.util.find_spec(module).origin).read_text()
        defs = {n.name for n in ast.parse(source).body if isinstance(n, ast.FunctionDef)}
        assert func in defs, f"{name}: {module} has no function {func}"


def test_top_level_exports_are_lazy():
    import subprocess
    import sys

    code = ("import sys, vaccine_lib; heavy = [m for m in ('torch', 'transformers', 'vaccine_lib.stages') "
            "if m in sys.modules]; assert not heavy, heavy; "
            "from vaccine_lib import (VaccineConfig, VaccineTrainer, load_model, align, finetune, evaluate, "
            "drift_stage); from vaccine_lib import drift, stages; import vaccine_lib.drift as D; "
            "assert drift is D and drift_stage is stages.drift; "
            "assert VaccineTrainer.__module__ == 'vaccine_lib.vaccine'; "
            "assert set(vaccine_lib.__all__) <= set(dir(vaccine_lib)); print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_unknown_top_level_name_lists_exports():
    import vaccine_lib

    with pytest.raises(AttributeError, match="top-level names: .*VaccineTrainer"):
        vaccine_lib.NoSuchThing  # noqa: B018


def test_every_imported_package_is_pinned():
    """Each third-party package vaccine_lib imports directly is pinned in requirements.txt (issue 21)."""
    import ast
    import importlib.metadata
    import sys

    dists = importlib.metadata.packages_distributions()
    pinned = set(_requirements("requirements.txt")) | {"torch"}
    data = set(_requirements("requirements-data.txt"))  # --no-deps data packages (reasoning_gym)
    missing = set()
    for path in (ROOT / "vaccine_lib").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in ("vaccine_lib", "__future__"):
                    continue
                owners = {_canon(d) for d in dists.get(top, [top])}
                if not owners & (pinned | data):
                    missing.add(f"{top} ({path.relative_to(ROOT)})")
    assert not missing, f"imported but not pinned in requirements.txt / pyproject.toml: {sorted(missing)}"

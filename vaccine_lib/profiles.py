"""Experiment profiles: a YAML file in ``configs/profiles/`` validated into a :class:`Profile`. A file gives every
field or inherits what it leaves out through ``extends: <name>`` (nothing falls back to values in code); its name
is its file name; outputs stay inside ``runs/<name>/`` and ``results/<label>/`` (``figures/`` only for the
committed default). Overrides: ``--override align.lr=1e-3``, or ``{"align": {"lr": 1e-3}}`` / ``{"align.lr": 1e-3}``."""

import copy
import hashlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import ConfigDict, Field, ValidationError, model_validator

from .config import (
    DEVICES, DTYPES, MODELS, SOURCES, AlignConfig, DriftConfig, EvalConfig, FinetuneConfig,
    OverheadConfig, StageConfig, Strict, Sweeps, check_dtype_device, rule,
)
from .errors import SEED_MAX, ConfigError, explain
from .paths import REPO_ROOT, inside, repo_root

SECTIONS: dict[str, type[StageConfig]] = {"align": AlignConfig, "finetune": FinetuneConfig, "eval": EvalConfig,
                                          "drift": DriftConfig, "overhead": OverheadConfig, "sweeps": Sweeps}
NOTEBOOK_IDS = ("01", "02", "03", "04", "05", "06")
#: the profile whose outputs are the committed figures/ and executed notebooks
COMMITTED_PROFILE = "default"
#: a profile name (its file name without .yaml): no leading dot, so never ``.``, ``..`` or a hidden folder
NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping key given twice (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key != "<<" and key in seen:
                raise ConfigError(f"line {key_node.start_mark.line + 1}: key {key!r} is given twice (first on line "
                                  f"{seen[key]}). Fix: keep one of them (the sections of a profile merge only "
                                  "through 'extends:').")
            seen.setdefault(key, key_node.start_mark.line + 1)
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str, where: str):
    """``yaml.safe_load`` that raises ConfigError naming ``where`` and the line of a duplicate key or syntax error."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML ({exc})") from None


def profiles_dir() -> Path:
    """``configs/profiles`` of the repository (``$VACCINE_PROFILES_DIR`` overrides)."""
    env = os.environ.get("VACCINE_PROFILES_DIR")
    if env and not Path(env).is_dir():
        raise ConfigError(f"VACCINE_PROFILES_DIR={env!r} is not a folder. Fix: point it at a folder of profile YAML "
                          "files or unset it (configs/profiles).", param="VACCINE_PROFILES_DIR")
    return Path(env) if env else REPO_ROOT / "configs" / "profiles"


def profile_names() -> list[str]:
    return sorted(p.stem for p in profiles_dir().glob("*.yaml") if NAME.fullmatch(p.stem))


def check_inside(param: str, path, committed: bool) -> Path:
    """``path`` if it resolves inside ``runs/`` or ``results/`` (or, ``committed``, ``figures/``), else ConfigError."""
    path, root = Path(path), repo_root()
    roots = (root / "runs", root / "results") + ((root / "figures",) if committed else ())
    if not inside(path, *roots):
        raise ConfigError(f"{param}={str(path)!r} resolves to {path.resolve()}, outside the output folders; allowed: "
                          f"inside {', '.join(str(r) for r in roots)}"
                          + ("" if committed else " (figures/ only for the committed default profile)")
                          + f". Fix: leave {param} unset (derived from the profile) or pick a folder inside those.",
                          param=param)
    return path


class Profile(Strict):
    """One experiment grid: top-level settings, the stage configs and the sweeps."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="the profile's file name (without .yaml)")
    path: str = Field(description="the profile file")
    overrides: dict = Field(default_factory=dict, description="overrides applied on top of the file")
    description: str = Field(description="one line on what the profile is for")
    model: Annotated[str, rule(lambda v: v in MODELS or "/" in v or os.path.isdir(v), f"unknown model; allowed "
                               f"values: {', '.join(MODELS)}, a Hugging Face id (org/name) or an existing local "
                               "checkpoint folder")] = Field(description="model registry name, Hub id or local folder")
    device: Literal[DEVICES] = Field(description="where stages run ('auto': CUDA when present)")
    dtype: Literal[DTYPES] = Field(description="weights dtype")
    data_source: Literal[SOURCES] = Field(description="embedded data or the paper's Hub datasets")
    threads: int = Field(ge=0, le=1024, description="torch threads on CPU; 0 = torch's default")
    seeds: Annotated[list[int], rule(lambda v: all(0 <= s <= SEED_MAX for s in v), f"allowed range [0, {SEED_MAX}]"),
                     rule(lambda v: len(set(v)) == len(v), "seeds must be distinct")] = Field(
        min_length=1, description="seeds; every result row carries one")
    shared_alignment: bool = Field(True, description="one alignment (seed = the first seed) shared by the fine-tuning "
                                   "runs of every seed, as the service provider aligns once; false: one per seed")
    runtime: Annotated[dict[str, float], rule(
        lambda v: set(v) <= set(NOTEBOOK_IDS) and all(0 <= x < 1e6 for x in v.values()),
        f"allowed keys: {', '.join(NOTEBOOK_IDS)}; minutes in [0, 1e6)")] = Field(
        description="expected minutes per notebook (documentation)")
    align: AlignConfig
    finetune: FinetuneConfig
    eval: EvalConfig
    drift: DriftConfig
    overhead: OverheadConfig
    sweeps: Sweeps

    @model_validator(mode="after")
    def _consistent(self):
        check_dtype_device(self.dtype, self.device)
        return self

    @property
    def seed(self) -> int:  # the first seed (single-seed experiments: alignment curves, t-SNE, overhead)
        return self.seeds[0]

    @property
    def committed(self) -> bool:
        """True only for exactly ``configs/profiles/default.yaml`` without overrides."""
        official = REPO_ROOT / "configs" / "profiles" / f"{COMMITTED_PROFILE}.yaml"
        return self.name == COMMITTED_PROFILE and not self.overrides and Path(self.path).resolve() == official.resolve()

    @property
    def label(self) -> str:
        """Output folder name: the profile name, plus a hash of the overrides when there are any."""
        if not self.overrides:
            return self.name
        h = hashlib.sha256(json.dumps(self.overrides, sort_keys=True, default=str).encode()).hexdigest()[:8]
        return f"{self.name}+{h}"

    def run_dir(self) -> Path:
        """The stage cache (shared by every notebook; keyed by config, so overrides share it too)."""
        return check_inside("run_dir", repo_root() / "runs" / self.name, False)

    def results_dir(self) -> Path:
        return check_inside("results_dir", repo_root() / "results" / self.label, False)

    def figures_dir(self) -> Path:
        """``figures/`` for the committed default profile, ``results/<label>/figures`` for anything else."""
        return repo_root() / "figures" if self.committed else self.results_dir() / "figures"

    def replace(self, overrides: dict) -> "Profile":
        """This profile with more overrides (same syntax as :func:`load_profile`)."""
        return load_profile(self.path, _merge(self.overrides, normalise_overrides(overrides)))


def profile_path(name) -> Path:
    """The YAML file of a built-in profile name, or a path to a profile YAML file."""
    text = str(name)
    builtin = profiles_dir() / f"{text}.yaml"
    if "/" not in text and not text.endswith((".yaml", ".yml")) and NAME.fullmatch(text) and builtin.is_file():
        return builtin
    as_path = Path(text)
    if as_path.suffix in (".yaml", ".yml") and as_path.is_file():
        return as_path
    raise ConfigError(f"unknown profile {text!r}; allowed values: {', '.join(profile_names())} "
                      "or the path of a profile YAML file. Fix: pick one of these names or give an existing file.")


def _raw(path: Path, seen: tuple = ()) -> dict:
    """The file's fields with its ``extends:`` chain resolved (``profile`` / ``extends`` removed)."""
    if path.resolve() in seen:
        raise ConfigError(f"{path}: 'extends' forms a cycle ({' -> '.join(str(p) for p in seen)})")
    if not NAME.fullmatch(path.stem):
        raise ConfigError(f"{path}: profile name {path.stem!r} (the file name) is not allowed; allowed: letters, "
                          "digits, '_', '-' and '.', not starting with a dot (the name becomes a folder under runs/ "
                          "and results/). Fix: rename the file, e.g. to my_profile.yaml.", param="profile")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the profile ({exc}). Fix: give a readable UTF-8 YAML file.") from None
    data = load_yaml(text, str(path)) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of profile fields at the top level")
    declared = data.pop("profile", None)
    if declared is not None and str(declared) != path.stem:
        raise ConfigError(f"{path}: 'profile: {declared}' but a profile's name is its file name ({path.stem!r}). "
                          f"Fix: remove the 'profile:' line or rename the file to {declared}.yaml "
                          "(a file outside configs/profiles/ may not take a built-in profile's name).")
    parent = data.pop("extends", None)
    if parent is None:
        _check_complete(path, data)
        return data
    return _merge(_raw(profile_path(parent), seen + (path.resolve(),)), data)


def _check_complete(path: Path, data: dict) -> None:
    missing = [n for n in Profile.model_fields if n not in ("name", "path", "overrides", *SECTIONS, *data)]
    for sec, cls in SECTIONS.items():
        given = data.get(sec)
        if not isinstance(given, dict):
            missing.append(sec)
            continue
        missing += [f"{sec}.{f}" for f in cls.section_fields() if f not in given]
    if missing:
        raise ConfigError(f"{path} is incomplete: missing {', '.join(missing)}. Fix: add them, or start the file "
                          "with 'extends: <profile>' to inherit every field it does not set.")


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "per_task":
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def normalise_overrides(overrides: dict | None) -> dict:
    """``{"align.lr": 1e-3, "seed": 1}`` -> ``{"align": {"lr": 1e-3}, "seeds": [1]}``; nested dicts are kept."""
    out: dict[str, Any] = {}
    if overrides is None:
        return out
    if not isinstance(overrides, dict):
        raise ConfigError(f"overrides must be a dict of profile fields, e.g. {{'align': {{'lr': 1e-3}}}}; "
                          f"got {overrides!r}")
    for key, value in overrides.items():
        key = str(key).replace("__", ".")
        if key == "seed":
            key, value = "seeds", [value]
        parts = key.split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {key!r} conflicts with another override of {part!r}")
        if isinstance(value, dict) and isinstance(node.get(parts[-1]), dict):
            node[parts[-1]] = _merge(node[parts[-1]], value)
        else:
            node[parts[-1]] = value
    return out


def parse_overrides(items) -> dict:
    """``["align.lr=1e-3", "sweeps.ps=[0.0, 0.5]", "seed=1"]`` (values read as YAML) -> overrides dict."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--override {item!r}: expected key=value, e.g. align.lr=1e-3 or sweeps.ps=[0.0,0.1]")
        if key.strip() in out:
            raise ConfigError(f"--override {key.strip()} is given twice. Fix: keep one of them.")
        out[key.strip()] = load_yaml(value, f"--override {item!r}")
    return normalise_overrides(out)


def load_profile(name="default", overrides: dict | None = None) -> Profile:
    """Load, complete (``extends:``), override and validate a profile (a built-in name or a YAML path); raises
    :class:`ConfigError`. ``overrides``: nested or dotted (``{"align.lr": 1e-3}``, ``{"seed": 1}``)."""
    if isinstance(name, Profile):
        return name.replace(overrides) if overrides else name
    path = profile_path(name)
    builtin = path.resolve().parent == profiles_dir().resolve()
    if not builtin and path.stem in profile_names():
        raise ConfigError(f"{path}: a profile file outside {profiles_dir()} may not be named {path.stem!r} like a "
                          "built-in profile (its outputs would mix with the built-in one's). Fix: rename the file.")
    over = normalise_overrides(overrides)
    data = _merge(_raw(path), over)
    for sec, cls in SECTIONS.items():
        point = sorted(set(data[sec]) & cls.point_fields()) if isinstance(data.get(sec), dict) else []
        if point:
            raise ConfigError(f"{sec}.{point[0]} cannot be set in a profile: it is set per experiment point or "
                              "from the profile's top level (model, dtype, data_source, device, seeds). "
                              f"Fix: remove {sec}.{point[0]}.")
    try:
        top = {k: v for k, v in data.items() if k not in SECTIONS}
        for sec in ("align", "finetune", "eval"):
            if isinstance(data.get(sec), dict):
                data[sec] = {**data[sec], "device": data.get("device", "auto")}
        if isinstance(data.get("align"), dict):
            data["align"].update(model=data.get("model"), dtype=data.get("dtype"), source=data.get("data_source"))
        sections = {sec: cls(**(data.get(sec) or {})) for sec, cls in SECTIONS.items()}
        return Profile(name=path.stem, path=str(path), overrides=over, **top, **sections)
    except ValidationError as exc:
        raise ConfigError(explain(exc, Profile)) from None


def describe_profile(P: Profile) -> str:
    """A short human-readable summary of a profile."""
    a, f, e, s = P.align, P.finetune, P.eval, P.sweeps
    return (f"profile {P.label!r} ({P.path}): model {P.model} on {P.device}, {P.dtype}, seeds {P.seeds}\n"
            f"  align: n={a.n}, epochs={a.epochs:g}, max_steps={a.max_steps}, lr={a.lr:g}, batch={a.batch_size}, "
            f"rho={a.rho:g}, LoRA r={a.lora_r} alpha={a.lora_alpha:g} on {a.lora_targets}\n"
            f"  finetune: task={f.task}, n={f.n}, p={f.p:g}, epochs={f.epochs:g}, max_steps={f.max_steps}, "
            f"lr={f.lr:g}, LoRA alpha={f.lora_alpha:g} on {f.lora_targets}\n"
            f"  sweeps: methods {s.defenses}, p in {s.ps}, n in {s.sample_counts}, rho in {s.rhos}\n"
            f"  eval: {e.n_harmful} harmful + {e.n_task} task items, {e.max_new_tokens} new tokens, judge {e.judge}")


if __name__ == "__main__":  # python -m vaccine_lib.profiles [name ...]
    for n in sys.argv[1:] or profile_names():
        print(describe_profile(load_profile(n)))

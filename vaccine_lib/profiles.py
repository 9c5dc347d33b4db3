"""Experiment profiles: a YAML file in ``configs/profiles/`` validated into one :class:`Profile`.

A profile's sections are the stage configs of ``vaccine_lib.config`` (``align``, ``finetune``,
``eval``, ``drift``, ``overhead``) plus the ``sweeps`` the experiment registry expands; its top
level holds the model, device, dtype, data source, threads and the list of ``seeds``.

- **Complete or ``extends:``.** A profile file either gives every field, or starts with
  ``extends: <name>`` and inherits what it leaves out from that profile. A partial file without
  ``extends:`` is an error (nothing falls back to values written in code).
- **Its name is its file name.** ``configs/profiles/smoke.yaml`` is ``smoke``; a ``profile:`` line,
  if present, must agree. Outputs are derived from it: the stage cache ``runs/<name>/``, executed
  notebooks ``results/<name>/``, figures ``results/<name>/figures/``, except that the committed
  ``figures/`` is written only by exactly ``configs/profiles/default.yaml`` without overrides. A file
  elsewhere may not borrow a built-in profile's name.
- **Overrides** use one syntax everywhere: ``--override align.lr=1e-3`` on a command line,
  ``overrides={"align": {"lr": 1e-3}}`` (or ``{"align.lr": 1e-3}``) in a notebook or papermill.

>>> P = load_profile("smoke", {"sweeps": {"ps": [0.0, 0.5]}})
>>> P.sweeps.ps
[0.0, 0.5]
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .config import (
    MAX_SEED, AlignConfig, DriftConfig, EvalConfig, FinetuneConfig, OverheadConfig, StageConfig, Sweeps,
    check_dtype_device, explain,
)
from .errors import ConfigError

from .paths import REPO_ROOT, repo_root  # noqa: E402
SECTIONS: dict[str, type[StageConfig]] = {
    "align": AlignConfig, "finetune": FinetuneConfig, "eval": EvalConfig, "drift": DriftConfig,
    "overhead": OverheadConfig, "sweeps": Sweeps,
}
NOTEBOOK_IDS = ("01", "02", "03", "04", "05", "06")
#: the profile whose outputs are the committed figures/ and executed notebooks
COMMITTED_PROFILE = "default"


def profiles_dir() -> Path:
    """``configs/profiles`` of the repository (``$VACCINE_PROFILES_DIR`` overrides)."""
    env = os.environ.get("VACCINE_PROFILES_DIR")
    return Path(env) if env else REPO_ROOT / "configs" / "profiles"


def profile_names() -> list[str]:
    """Names of the profiles in ``configs/profiles`` (the built-in ones)."""
    return sorted(p.stem for p in profiles_dir().glob("*.yaml"))


class Profile(BaseModel):
    """One experiment grid: top-level settings, the stage configs and the sweeps."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="the profile's file name (without .yaml)")
    path: str = Field(description="the profile file")
    overrides: dict = Field(default_factory=dict, description="overrides applied on top of the file")
    description: str = Field(description="one line on what the profile is for")
    model: str = Field(description="model registry name, Hub id or local checkpoint folder")
    device: Literal["cpu", "cuda", "auto"] = Field(description="where stages run ('auto': CUDA when present)")
    dtype: Literal["float32", "bfloat16", "float16"] = Field(description="weights dtype")
    data_source: Literal["offline", "hub"] = Field(description="embedded data or the paper's Hub datasets")
    threads: int = Field(ge=0, le=1024, description="torch threads on CPU; 0 = torch's default")
    seeds: list[int] = Field(min_length=1, description="seeds; every result row carries one")
    shared_alignment: bool = Field(True, description="one alignment (seed = the first seed) shared by the "
                                   "fine-tuning runs of every seed, as the service provider aligns once; "
                                   "false: one alignment per seed")
    runtime: dict[str, float] = Field(description="expected minutes per notebook (documentation)")
    align: AlignConfig
    finetune: FinetuneConfig
    eval: EvalConfig
    drift: DriftConfig
    overhead: OverheadConfig
    sweeps: Sweeps

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v):
        bad = [s for s in v if not 0 <= s <= MAX_SEED]
        if bad:
            raise ValueError(f"seed(s) {bad} out of range; allowed range [0, {MAX_SEED}]")
        if len(set(v)) != len(v):
            raise ValueError("seeds must be distinct")
        return v

    @field_validator("runtime")
    @classmethod
    def _runtime(cls, v):
        bad = sorted(set(v) - set(NOTEBOOK_IDS))
        if bad:
            raise ValueError(f"unknown notebook id(s) {bad}; allowed keys: {', '.join(NOTEBOOK_IDS)}")
        if any(not (0 <= x < 1e6) for x in v.values()):
            raise ValueError("minutes must be in [0, 1e6)")
        return v

    @field_validator("model")
    @classmethod
    def _model(cls, v):
        from .models import PAPER_MODELS, available_models

        if v in available_models() or v in PAPER_MODELS or "/" in v or os.path.isdir(v):
            return v
        raise ValueError(f"unknown model; allowed values: {', '.join(available_models())}, a Hugging Face id "
                         "(org/name) or an existing local checkpoint folder")

    @model_validator(mode="after")
    def _consistent(self):
        check_dtype_device(self.dtype, self.device)
        return self

    # ------------------------------------------------------------------ derived

    @property
    def seed(self) -> int:
        """The first seed (single-seed experiments: alignment curves, t-SNE, overhead)."""
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
        return repo_root() / "runs" / self.name

    def results_dir(self) -> Path:
        return repo_root() / "results" / self.label

    def figures_dir(self) -> Path:
        """``figures/`` for the committed default profile, ``results/<label>/figures`` for anything else."""
        return repo_root() / "figures" if self.committed else self.results_dir() / "figures"

    def replace(self, overrides: dict) -> "Profile":
        """This profile with more overrides (same syntax as :func:`load_profile`)."""
        return load_profile(self.path, _merge(self.overrides, normalise_overrides(overrides)))




# --------------------------------------------------------------------------- loading


def profile_path(name) -> Path:
    """The YAML file of a built-in profile name, or a path to a profile YAML file."""
    text = str(name)
    builtin = profiles_dir() / f"{text}.yaml"
    if "/" not in text and not text.endswith((".yaml", ".yml")) and builtin.is_file():
        return builtin
    as_path = Path(text)
    if as_path.suffix in (".yaml", ".yml") and as_path.is_file():
        return as_path
    raise ConfigError(f"unknown profile {text!r}; allowed values: {', '.join(profile_names())} "
                      "or the path of a profile YAML file. Fix: pick one of these names or give an existing file.")


def _read(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of profile fields at the top level")
    return data


def _raw(path: Path, seen: tuple = ()) -> dict:
    """The file's fields with its ``extends:`` chain resolved (``profile`` / ``extends`` removed)."""
    if path.resolve() in seen:
        raise ConfigError(f"{path}: 'extends' forms a cycle ({' -> '.join(str(p) for p in seen)})")
    data = _read(path)
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
    top = [n for n in Profile.model_fields if n not in ("name", "path", "overrides") and n not in SECTIONS]
    missing = [n for n in top if n not in data]
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
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--override {item!r}: the value is not valid YAML ({exc})") from None
    return normalise_overrides(out)


def load_profile(name="default", overrides: dict | None = None) -> Profile:
    """Load, complete (``extends:``), override and validate a profile. Raises :class:`ConfigError`.

    ``name``: a built-in name (``smoke``, ``default``, ``full``, ``paper``) or a YAML path.
    ``overrides``: nested or dotted dict (``{"align.lr": 1e-3}``, ``{"sweeps": {"ps": [0, 0.2]}}``, ``{"seed": 1}``).
    """
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
        given = data.get(sec)
        if isinstance(given, dict):
            point = sorted(set(given) & cls.point_fields())
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
        sections = {}
        for sec, cls in SECTIONS.items():
            sections[sec] = cls(**(data.get(sec) or {}))
        return Profile(name=path.stem, path=str(path), overrides=over, **top, **sections)
    except ValidationError as exc:
        raise ConfigError(explain(exc, Profile)) from None


# --------------------------------------------------------------------------- notebooks

#: the plain parameters a notebook's ``parameters`` cell may set
NOTEBOOK_PARAMETERS = ("profile", "seed", "run_dir", "figures_dir", "tables_dir", "overrides")
_KERNEL_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}
_VALIDATED_NAMES: set | None = None


class NotebookContext(BaseModel):
    """What a notebook needs after validating its parameters."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    profile: Profile
    run_dir: Path
    figures_dir: Path
    tables_dir: Path


def _is_plain(v) -> bool:
    return v is None or isinstance(v, (str, int, float, bool, list, tuple, dict, Path))


def from_notebook(namespace: dict) -> NotebookContext:
    """Validate a notebook's parameters (its globals) and return the profile and output folders.

    Parameters: ``profile`` (name or YAML path), ``seed`` (None = the profile's seeds), ``run_dir`` /
    ``figures_dir`` / ``tables_dir`` (None = derived from the profile), ``overrides`` (dict, see
    :func:`load_profile`). Any other name (e.g. a misspelt papermill ``-p``) stops with a ConfigError.
    Also sets torch's thread count and the seed (``transformers.set_seed``).
    """
    global _VALIDATED_NAMES
    user = {k: v for k, v in namespace.items() if not k.startswith("_") and k not in _KERNEL_NAMES and _is_plain(v)}
    # first call in a kernel: every plain global is a parameter; a later re-run ignores names defined by later cells
    candidates = user if _VALIDATED_NAMES is None else {k: v for k, v in user.items() if k in _VALIDATED_NAMES}
    unknown = sorted(k for k in candidates if k not in NOTEBOOK_PARAMETERS)
    if unknown:
        raise ConfigError(f"unknown notebook parameter(s) {', '.join(map(repr, unknown))}; allowed parameters: "
                          f"{', '.join(NOTEBOOK_PARAMETERS)}. Fix: change profile fields through `overrides`, "
                          "e.g. -p overrides '{\"align\": {\"lr\": 0.001}}'.")
    params = {k: v for k, v in user.items() if k in NOTEBOOK_PARAMETERS}
    overrides = params.get("overrides") or {}
    if isinstance(overrides, str):  # papermill -p overrides '{...}' passes a string: JSON (2e-3 is a number), else YAML
        try:
            overrides = json.loads(overrides)
        except ValueError:
            try:
                overrides = yaml.safe_load(overrides) or {}
            except yaml.YAMLError as exc:
                raise ConfigError(f"overrides={overrides!r} is not a dict nor valid JSON/YAML ({exc})") from None
    overrides = normalise_overrides(overrides)
    if params.get("seed") is not None:
        overrides = _merge(overrides, {"seeds": [params["seed"]]})
    P = load_profile(params.get("profile") or COMMITTED_PROFILE, overrides)
    from .registry import check_pools

    check_pools(P)  # sample counts fit the data: fail here, before any stage of the notebook runs
    run_dir = Path(params.get("run_dir") or P.run_dir())
    figures_dir = Path(params.get("figures_dir") or P.figures_dir())
    tables_dir = Path(params.get("tables_dir") or figures_dir / "tables")
    for d in (run_dir, figures_dir, tables_dir):
        d.mkdir(parents=True, exist_ok=True)
    apply_runtime(P)
    from .provenance import set_context

    set_context(profile=P.label, profile_path=P.path, overrides=P.overrides)
    if _VALIDATED_NAMES is None:
        _VALIDATED_NAMES = set(user)
    return NotebookContext(profile=P, run_dir=run_dir, figures_dir=figures_dir, tables_dir=tables_dir)


def apply_runtime(P: Profile) -> None:
    """Torch threads (``threads``) and the global seed (``transformers.set_seed(P.seed)``)."""
    import torch
    from transformers import set_seed

    if P.threads:
        torch.set_num_threads(P.threads)
    set_seed(P.seed)


def describe(P: Profile) -> str:
    """A short human-readable summary of a profile."""
    a, f, e, s = P.align, P.finetune, P.eval, P.sweeps
    return (f"profile {P.label!r} ({P.path}): model {P.model} on {P.device}, {P.dtype}, seeds {P.seeds}\n"
            f"  align: n={a.n}, epochs={a.epochs:g}, max_steps={a.max_steps}, lr={a.lr:g}, batch={a.batch_size}, "
            f"rho={a.rho:g}, LoRA r={a.lora_r} alpha={a.lora_alpha:g} on {a.lora_targets}\n"
            f"  finetune: task={f.task}, n={f.n}, p={f.p:g}, epochs={f.epochs:g}, max_steps={f.max_steps}, lr={f.lr:g}, "
            f"LoRA alpha={f.lora_alpha:g} on {f.lora_targets}\n"
            f"  sweeps: methods {s.defenses}, p in {s.ps}, n in {s.sample_counts}, rho in {s.rhos}\n"
            f"  eval: {e.n_harmful} harmful + {e.n_task} task items, {e.max_new_tokens} new tokens, judge {e.judge}")


if __name__ == "__main__":  # python -m vaccine_lib.profiles [name ...]
    import sys

    for n in sys.argv[1:] or profile_names():
        print(describe(load_profile(n)))

"""Experiment profiles: one object holding the grid every notebook runs.

A profile is a YAML file in ``configs/profiles/`` (``smoke``, ``default``, ``full``, ``paper``)
loaded into a frozen :class:`Profile` dataclass and validated: a bad value stops with a message
that names the allowed range or values. The same YAML files work as papermill parameter files
(``papermill -f configs/profiles/full.yaml ...``): their top-level keys are ``profile`` plus the
profile's sections, which the notebooks accept as parameters.

>>> P = get_profile("smoke", seeds=[1], finetune={"ps": [0.0, 0.5]})
>>> P.finetune.ps
(0.0, 0.5)

Notebooks call :func:`from_notebook` in the cell right after their ``parameters`` cell.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, check_choice, check_range

PROFILE_NAMES = ("smoke", "default", "full", "paper")
#: the fine-tuning defenses of the paper (Table 1); "NA" = Non-Aligned
DEFENSES = ("NA", "SFT", "EWC", "Vlguard", "KL", "Vaccine")
PERTURBATIONS = ("gradient", "gaussian")
LORA_MODES = ("double", "single")
DEVICES = ("cpu", "cuda", "auto")
DTYPES = ("float32", "bfloat16", "float16")
DATA_SOURCES = ("offline", "hub")

_FALLBACK_TASKS = ("sst2", "agnews", "gsm8k", "alpaca")
_FALLBACK_JUDGES = ("keyword", "classifier", "beaverdam")


def allowed_tasks() -> tuple[str, ...]:
    try:
        from .data import TASKS  # type: ignore

        return tuple(TASKS)
    except Exception:  # data package not importable yet / partial
        return _FALLBACK_TASKS


def allowed_judges() -> tuple[str, ...]:
    try:
        from .judge import JUDGES  # type: ignore

        return tuple(JUDGES)
    except Exception:
        return _FALLBACK_JUDGES


def profiles_dir() -> Path:
    """``configs/profiles`` of the repository (``$VACCINE_PROFILES_DIR`` overrides)."""
    env = os.environ.get("VACCINE_PROFILES_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "configs" / "profiles"


# --------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class AlignSection:
    """Stage 1, alignment on (harmful question -> safe answer) + helpful pairs."""

    n: int = 256  # alignment samples
    helpful_fraction: float = 0.5  # helpful (non-refusal) share of the alignment set
    epochs: float = 1.0
    max_steps: int = -1  # >0 overrides epochs
    lr: float = 1e-3
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 128
    rho: float = 2.0  # Vaccine perturbation radius
    lora_r: int = 8
    lora_alpha: int = 4
    weight_decay: float = 0.1
    warmup_ratio: float = 0.1


@dataclass(frozen=True)
class FinetuneSection:
    """Stage 2, user fine-tuning on a benign task mixed with a fraction p of harmful pairs."""

    task: str = "sst2"  # main benign task
    tasks: tuple[str, ...] = ("sst2",)  # Table 4
    n: int = 64  # user samples (Table 1)
    ps: tuple[float, ...] = (0.0, 0.1, 0.3)  # harmful ratios swept (Fig. 2, Table 1)
    #: harmful ratios for the fine-tuning defenses EWC / Vlguard / KL in Table 1 (empty: the same as ps);
    #: NA, SFT and Vaccine always run at every ratio in ps
    baseline_ps: tuple[float, ...] = ()
    p: float = 0.3  # harmful ratio for Tables 4, 6, 7, 8 and Fig. 3
    sample_counts: tuple[int, ...] = (32, 64, 128)  # Table 2
    p_samples: float = 0.3  # harmful ratio for Table 2
    sample_defenses: tuple[str, ...] = ("SFT", "Vaccine")  # defenses run over sample_counts (Table 2)
    epochs: float = 2.0
    max_steps: int = -1
    lr: float = 2e-3
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 128
    defenses: tuple[str, ...] = DEFENSES
    ewc_lambda: float = 1e9
    kl_weight: float = 1e-3
    vlguard_m: int = 32  # alignment samples mixed in by Vlguard
    lora_r: int = 8
    lora_alpha: int = 4
    #: per-task changes of n / epochs / max_length, e.g. {"gsm8k": {"n": 4000, "epochs": 50}}
    per_task: dict = field(default_factory=dict)

    def for_task(self, task: str) -> dict:
        """n / epochs / max_length for one task (``per_task`` entries override the section's)."""
        out = {"n": self.n, "epochs": self.epochs, "max_length": self.max_length}
        out.update(self.per_task.get(task, {}))
        return out


@dataclass(frozen=True)
class EvalSection:
    """Stage 3: Harmful Score on unseen harmful prompts, Fine-tune Accuracy on task test items."""

    n_harmful: int = 50
    n_task: int = 50
    max_new_tokens: int = 48
    batch_size: int = 16
    judge: str = "classifier"


@dataclass(frozen=True)
class DriftSection:
    """Harmful embedding drift (paper section 3): measured on fixed alignment samples."""

    n_samples: int = 32
    every_steps: int = 4  # record drift / alignment loss during fine-tuning (Fig. 3)
    tsne_samples: int = 64  # Fig. 4


@dataclass(frozen=True)
class AblationSection:
    rhos: tuple[float, ...] = (0.5, 2.0, 5.0)  # Table 6
    perturbations: tuple[str, ...] = PERTURBATIONS  # Table 7 (Gaussian noise with the same budget E||eps||^2 = rho^2)
    lora_modes: tuple[str, ...] = LORA_MODES  # Table 8
    lora_defenses: tuple[str, ...] = ("SFT", "Vaccine")  # methods compared over lora_modes (Table 8)


@dataclass(frozen=True)
class OverheadSection:
    """Tables 5 / 10: per-step time and peak memory of SFT, Vaccine, Accelerated Vaccine."""

    steps: int = 6
    warmup_steps: int = 1
    batch_size: int = 8
    seq_len: int = 128
    taus: tuple[int, ...] = (5,)  # Accelerated Vaccine: perturbed step every tau steps


SECTIONS: dict[str, type] = {
    "align": AlignSection,
    "finetune": FinetuneSection,
    "eval": EvalSection,
    "drift": DriftSection,
    "ablations": AblationSection,
    "overhead": OverheadSection,
}


@dataclass(frozen=True)
class Profile:
    """The whole experiment grid of one profile (see ``configs/profiles/*.yaml``)."""

    name: str = "default"
    description: str = ""
    model: str = "smollm2-135m-instruct"
    device: str = "cpu"
    dtype: str = "float32"
    data_source: str = "offline"
    threads: int = 0  # torch threads on CPU; 0 = leave torch's default
    seeds: tuple[int, ...] = (42,)
    runtime: dict = field(default_factory=dict)  # expected minutes per notebook (documentation only)
    align: AlignSection = AlignSection()
    finetune: FinetuneSection = FinetuneSection()
    eval: EvalSection = EvalSection()
    drift: DriftSection = DriftSection()
    ablations: AblationSection = AblationSection()
    overhead: OverheadSection = OverheadSection()

    @property
    def seed(self) -> int:
        """The first seed (single-seed experiments)."""
        return self.seeds[0]

    def to_dict(self) -> dict:
        return _to_plain(dataclasses.asdict(self))

    def replace(self, **overrides) -> "Profile":
        """A validated copy with overrides (same syntax as :func:`get_profile`)."""
        return _build(_merge(self.to_dict(), _normalise_overrides(overrides)))


TOP_LEVEL_FIELDS = tuple(f.name for f in dataclasses.fields(Profile))


def _to_plain(obj):
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj


# --------------------------------------------------------------------------- loading


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of profile fields at the top level")
    data = dict(data)
    name = data.pop("profile", None)
    data.setdefault("name", name or path.stem)
    return data


def profile_path(name: str) -> Path:
    """The YAML file of a profile name (or a path to a YAML file)."""
    if name in PROFILE_NAMES:
        return profiles_dir() / f"{name}.yaml"
    as_path = Path(str(name))
    if as_path.suffix in (".yaml", ".yml") and as_path.is_file():
        return as_path
    raise ConfigError(f"unknown profile {name!r}; allowed values: {', '.join(PROFILE_NAMES)} "
                      "(or the path of a profile YAML file)")


def _normalise_overrides(overrides: dict) -> dict:
    """``finetune__n=10`` -> ``{"finetune": {"n": 10}}``; nested dicts are kept."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        if "__" in key:
            section, sub = key.split("__", 1)
            out.setdefault(section, {})
            if not isinstance(out[section], dict):
                raise ConfigError(f"override {key!r} conflicts with {section}={out[section]!r}")
            out[section][sub] = value
        elif key == "seed":  # convenience: one seed
            out["seeds"] = [value]
        else:
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key].update(value)
            else:
                out[key] = value
    return out


def _merge(base: dict, over: dict) -> dict:
    result = copy.deepcopy(base)
    for key, value in over.items():
        if key in SECTIONS and isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = {**result[key], **value}
        else:
            result[key] = value
    return result


def _as_tuple(name: str, value) -> tuple:
    if isinstance(value, (list, tuple)):
        return tuple(value)
    if isinstance(value, (int, float, str)):
        return (value,)
    raise ConfigError(f"{name} must be a list, got {value!r}")


def _make_section(section: str, values) -> Any:
    cls = SECTIONS[section]
    if values is None:
        values = {}
    if dataclasses.is_dataclass(values):
        values = dataclasses.asdict(values)
    if not isinstance(values, dict):
        raise ConfigError(f"profile section {section!r} must be a mapping, got {values!r}")
    allowed = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in allowed:
            raise ConfigError(f"unknown field {section}.{key}; allowed fields: {', '.join(allowed)}")
        default = allowed[key].default
        if isinstance(default, tuple):
            value = _as_tuple(f"{section}.{key}", value)
        elif allowed[key].default_factory is dict and value is None:
            value = {}
        kwargs[key] = value
    return cls(**kwargs)


def _build(data: dict) -> Profile:
    allowed = set(TOP_LEVEL_FIELDS)
    unknown = [k for k in data if k not in allowed]
    if unknown:
        raise ConfigError(f"unknown profile field(s) {', '.join(map(repr, unknown))}; "
                          f"allowed fields: {', '.join(TOP_LEVEL_FIELDS)}")
    kwargs = {}
    for key, value in data.items():
        if key in SECTIONS:
            kwargs[key] = _make_section(key, value)
        elif key == "seeds":
            kwargs[key] = tuple(_as_tuple("seeds", value))
        elif key == "runtime":
            kwargs[key] = dict(value or {})
        else:
            kwargs[key] = value
    profile = Profile(**kwargs)
    validate(profile)
    return profile


def get_profile(name: str = "default", **overrides) -> Profile:
    """Load and validate a profile, with optional overrides.

    Overrides are top-level fields (``model="tiny-llama"``, ``seeds=[1, 2]``, ``seed=1``), whole or
    partial sections (``finetune={"ps": [0, 0.2]}``) or ``section__field`` keywords
    (``finetune__n=32``). Raises :class:`ConfigError` with the allowed values on anything invalid.
    """
    if isinstance(name, Profile):
        return name.replace(**overrides) if overrides else name
    data = _read_yaml(profile_path(name))
    return _build(_merge(data, _normalise_overrides(overrides)))


def list_profiles() -> list[str]:
    return list(PROFILE_NAMES)


# --------------------------------------------------------------------------- validation


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _positive_int(name, value):
    if not _is_int(value) or value <= 0:
        raise ConfigError(f"{name}={value!r} is out of range; allowed range: integers >= 1")


def _nonneg_int(name, value):
    if not _is_int(value) or value < 0:
        raise ConfigError(f"{name}={value!r} is out of range; allowed range: integers >= 0")


def _steps(name, value):
    if not _is_int(value) or (value <= 0 and value != -1):
        raise ConfigError(f"{name}={value!r} is out of range; allowed: -1 (use epochs) or an integer >= 1")


def _number(name, value, lo, hi, **kw):
    if not _is_num(value):
        raise ConfigError(f"{name}={value!r} must be a number")
    check_range(name, value, lo, hi, **kw)


def _validate_model(name: str) -> None:
    from .models import PAPER_MODELS, available_models

    if not isinstance(name, str) or not name:
        raise ConfigError(f"model must be a non-empty string, got {name!r}")
    if name in available_models() or name in PAPER_MODELS:
        return
    if "/" in name or os.path.isdir(name):  # Hub id or local checkpoint
        return
    raise ConfigError(f"unknown model {name!r}; allowed values: {', '.join(available_models())}, "
                      "a Hugging Face id (org/name) or a local checkpoint folder")


def validate(p: Profile) -> None:
    """Raise :class:`ConfigError` naming the allowed range for the first bad value."""
    _validate_model(p.model)
    check_choice("device", p.device, DEVICES)
    check_choice("dtype", p.dtype, DTYPES)
    check_choice("data_source", p.data_source, DATA_SOURCES)
    _nonneg_int("threads", p.threads)
    if not p.seeds:
        raise ConfigError("seeds must hold at least one integer seed")
    for s in p.seeds:
        _nonneg_int("seed", s)

    a = p.align
    _positive_int("align.n", a.n)
    _number("align.helpful_fraction", a.helpful_fraction, 0, 1)
    _number("align.epochs", a.epochs, 0, float("inf"), low_open=True)
    _steps("align.max_steps", a.max_steps)
    _number("align.lr", a.lr, 0, 1, low_open=True)
    _positive_int("align.batch_size", a.batch_size)
    _positive_int("align.grad_accum", a.grad_accum)
    _positive_int("align.max_length", a.max_length)
    _number("align.rho", a.rho, 0, float("inf"))
    _positive_int("align.lora_r", a.lora_r)
    _number("align.lora_alpha", a.lora_alpha, 0, float("inf"), low_open=True)
    _number("align.weight_decay", a.weight_decay, 0, float("inf"))
    _number("align.warmup_ratio", a.warmup_ratio, 0, 1)

    f = p.finetune
    tasks = allowed_tasks()
    check_choice("finetune.task", f.task, tasks)
    if not f.tasks:
        raise ConfigError("finetune.tasks must list at least one task; allowed values: " + ", ".join(tasks))
    for t in f.tasks:
        check_choice("finetune.tasks entry", t, tasks)
    _positive_int("finetune.n", f.n)
    if not f.ps:
        raise ConfigError("finetune.ps must list at least one harmful ratio in [0, 1]")
    for x in f.ps:
        _number("finetune.ps entry (harmful ratio p)", x, 0, 1)
    for x in f.baseline_ps:
        _number("finetune.baseline_ps entry (harmful ratio p)", x, 0, 1)
    _number("finetune.p (harmful ratio)", f.p, 0, 1)
    _number("finetune.p_samples (harmful ratio)", f.p_samples, 0, 1)
    if not f.sample_counts:
        raise ConfigError("finetune.sample_counts must list at least one sample count >= 1")
    for n in f.sample_counts:
        _positive_int("finetune.sample_counts entry", n)
    _number("finetune.epochs", f.epochs, 0, float("inf"), low_open=True)
    _steps("finetune.max_steps", f.max_steps)
    _number("finetune.lr", f.lr, 0, 1, low_open=True)
    _positive_int("finetune.batch_size", f.batch_size)
    _positive_int("finetune.grad_accum", f.grad_accum)
    _positive_int("finetune.max_length", f.max_length)
    if not f.defenses:
        raise ConfigError("finetune.defenses must list at least one of: " + ", ".join(DEFENSES))
    for d in f.defenses:
        check_choice("finetune.defenses entry", d, DEFENSES)
    for d in f.sample_defenses:
        check_choice("finetune.sample_defenses entry", d, DEFENSES)
    _number("finetune.ewc_lambda", f.ewc_lambda, 0, float("inf"))
    _number("finetune.kl_weight", f.kl_weight, 0, float("inf"))
    _positive_int("finetune.vlguard_m", f.vlguard_m)
    _positive_int("finetune.lora_r", f.lora_r)
    _number("finetune.lora_alpha", f.lora_alpha, 0, float("inf"), low_open=True)
    if not isinstance(f.per_task, dict):
        raise ConfigError(f"finetune.per_task must map a task to {{n, epochs, max_length}}, got {f.per_task!r}")
    for t, changes in f.per_task.items():
        check_choice("finetune.per_task key", t, tasks)
        if not isinstance(changes, dict):
            raise ConfigError(f"finetune.per_task.{t} must be a mapping of n / epochs / max_length")
        for k, v in changes.items():
            check_choice(f"finetune.per_task.{t} field", k, ("n", "epochs", "max_length"))
            if k == "epochs":
                _number(f"finetune.per_task.{t}.epochs", v, 0, float("inf"), low_open=True)
            else:
                _positive_int(f"finetune.per_task.{t}.{k}", v)

    e = p.eval
    _positive_int("eval.n_harmful", e.n_harmful)
    _positive_int("eval.n_task", e.n_task)
    _positive_int("eval.max_new_tokens", e.max_new_tokens)
    _positive_int("eval.batch_size", e.batch_size)
    check_choice("eval.judge", e.judge, allowed_judges())

    d = p.drift
    _positive_int("drift.n_samples", d.n_samples)
    _positive_int("drift.every_steps", d.every_steps)
    _positive_int("drift.tsne_samples", d.tsne_samples)

    ab = p.ablations
    if not ab.rhos:
        raise ConfigError("ablations.rhos must list at least one rho >= 0")
    for r in ab.rhos:
        _number("ablations.rhos entry (rho)", r, 0, float("inf"))
    for k in ab.perturbations:
        check_choice("ablations.perturbations entry", k, PERTURBATIONS)
    for m in ab.lora_modes:
        check_choice("ablations.lora_modes entry", m, LORA_MODES)
    for d in ab.lora_defenses:
        check_choice("ablations.lora_defenses entry", d, DEFENSES)

    o = p.overhead
    _positive_int("overhead.steps", o.steps)
    _nonneg_int("overhead.warmup_steps", o.warmup_steps)
    _positive_int("overhead.batch_size", o.batch_size)
    _positive_int("overhead.seq_len", o.seq_len)
    for t in o.taus:
        _positive_int("overhead.taus entry (tau)", t)


# --------------------------------------------------------------------------- notebooks

#: the plain parameters every notebook's ``parameters`` cell may set
NOTEBOOK_PARAMETERS = ("profile", "seed", "run_dir", "figures_dir", "tables_dir", "overrides")
#: names an IPython kernel defines by itself
_KERNEL_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}


@dataclass(frozen=True)
class NotebookContext:
    """What a notebook needs after validating its parameters."""

    profile: Profile
    run_dir: Path
    figures_dir: Path
    tables_dir: Path

    def __getattr__(self, item):  # P.finetune etc. straight through
        if item.startswith("__") or item == "profile":
            raise AttributeError(item)
        return getattr(self.profile, item)


def default_figures_dir(profile_name: str) -> Path:
    """``figures/`` for the default profile; ``results/<profile>/figures`` for the others."""
    root = Path(os.environ.get("VACCINE_REPO_ROOT", Path(__file__).resolve().parent.parent))
    if profile_name == "default":
        return root / "figures"
    return root / "results" / profile_name / "figures"


def default_run_dir(profile_name: str) -> Path:
    root = Path(os.environ.get("VACCINE_REPO_ROOT", Path(__file__).resolve().parent.parent))
    return root / "runs" / profile_name


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def from_notebook(namespace: dict) -> NotebookContext:
    """Validate a notebook's parameters (its globals) and return the profile and output folders.

    Accepted parameters: ``profile`` (a name or YAML path), ``seed`` (None = the profile's seeds),
    ``run_dir`` / ``figures_dir`` / ``tables_dir`` (None = defaults), ``overrides`` (dict, same syntax as
    :func:`get_profile`) and, so that ``papermill -f configs/profiles/<name>.yaml`` works, any
    profile field (``model``, ``finetune``, ...). Anything else stops with a :class:`ConfigError`.
    """
    global _VALIDATED_NAMES
    user = {k: v for k, v in namespace.items()
            if not k.startswith("_") and k not in _KERNEL_NAMES and _is_plain(v)}
    allowed = set(NOTEBOOK_PARAMETERS) | set(TOP_LEVEL_FIELDS)
    # The first call in a kernel sees only the parameters (and papermill's injected ones). When the
    # cell is re-run later in an interactive session, names defined by later cells are not parameters.
    candidates = user if _VALIDATED_NAMES is None else {k: v for k, v in user.items()
                                                        if k in _VALIDATED_NAMES or k in allowed}
    unknown = sorted(k for k in candidates if k not in allowed)
    if unknown:
        raise ConfigError(f"unknown notebook parameter(s) {', '.join(map(repr, unknown))}; allowed parameters: "
                          f"{', '.join(NOTEBOOK_PARAMETERS)} or a profile field ({', '.join(TOP_LEVEL_FIELDS[1:])})")
    user = {k: v for k, v in user.items() if k in allowed}
    name = user.get("profile", "default")
    if not isinstance(name, str):
        raise ConfigError(f"profile must be a string; allowed values: {', '.join(PROFILE_NAMES)}")
    overrides = user.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise ConfigError(f"overrides must be a dict of profile fields, got {overrides!r}")
    fields = {k: v for k, v in user.items() if k in TOP_LEVEL_FIELDS and k != "name"}
    base = get_profile(name)
    # fields injected from a profile YAML equal the profile's own values when it is the same profile
    merged = {**fields, **overrides}
    if user.get("seed") is not None:
        merged["seed"] = user["seed"]
    profile = base.replace(**merged) if merged else base
    run_dir = Path(user.get("run_dir") or default_run_dir(profile.name))
    figures_dir = Path(user.get("figures_dir") or default_figures_dir(profile.name))
    tables_dir = Path(user.get("tables_dir") or figures_dir / "tables")
    for d in (run_dir, figures_dir, tables_dir):
        d.mkdir(parents=True, exist_ok=True)
    if profile.threads:
        import torch

        torch.set_num_threads(profile.threads)
    seed_everything(profile.seed)
    if _VALIDATED_NAMES is None:
        _VALIDATED_NAMES = set(user)
    return NotebookContext(profile, run_dir, figures_dir, tables_dir)


_VALIDATED_NAMES: set | None = None


def _is_plain(v) -> bool:
    """Parameter-like values: what a parameters cell or papermill can set."""
    return v is None or isinstance(v, (str, int, float, bool, list, tuple, dict, Path))


def describe(p: Profile) -> str:
    """A short human-readable summary of a profile's grid."""
    f, a, e = p.finetune, p.align, p.eval
    return (f"profile {p.name!r}: model {p.model} on {p.device}, seeds {list(p.seeds)}\n"
            f"  align: n={a.n}, epochs={a.epochs}, max_steps={a.max_steps}, lr={a.lr}, batch={a.batch_size}, rho={a.rho}\n"
            f"  finetune: task={f.task}, n={f.n}, p in {list(f.ps)} (p*={f.p}), counts {list(f.sample_counts)}, "
            f"epochs={f.epochs}, lr={f.lr}, defenses {list(f.defenses)}\n"
            f"  eval: {e.n_harmful} harmful + {e.n_task} task items, {e.max_new_tokens} new tokens, judge {e.judge}")


if __name__ == "__main__":  # python -m vaccine_lib.profiles [name]
    import sys

    for n in sys.argv[1:] or PROFILE_NAMES:
        print(describe(get_profile(n)))

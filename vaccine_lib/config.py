"""Stage configurations: one validated pydantic model per stage, and the one map to ``TrainingArguments``.

The sections of a profile YAML (``configs/profiles/*.yaml``) *are* these models: ``align:`` is an
:class:`AlignConfig`, ``finetune:`` a :class:`FinetuneConfig`, ``eval:`` an :class:`EvalConfig`,
``drift:`` a :class:`DriftConfig`, ``overhead:`` an :class:`OverheadConfig` and ``sweeps:`` the
:class:`Sweeps` the experiment registry (``vaccine_lib.grids``) expands into stage configs. The same
models are what ``vaccine_lib.pipeline`` caches on, so there is no second layer of configuration.

- Unknown keys are refused (``extra="forbid"``); ``1e-3`` written in YAML (which PyYAML reads as a
  string) is accepted as a number.
- Every range is declared on its field (``Field(ge=, le=, description=)``); a bad value raises a
  :class:`~vaccine_lib.errors.ConfigError` that names the parameter, the allowed range, what the
  parameter means and how to fix it, before any stage runs.
- Fields marked ``point`` are set per experiment point by the registry (method, seed, harmful ratio,
  defense, ...) or copied from the profile's top level (model, dtype, data source, device), never
  in a YAML section.

>>> AlignConfig(method="vaccine", rho="2").rho
2.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError

ALIGN_METHODS = ("none", "sft", "vaccine")
DEFENSES = ("sft", "ewc", "vlguard", "kl")
LORA_MODES = ("double", "single")
PERTURBATIONS = ("gradient", "gaussian")
DTYPES = ("float32", "bfloat16", "float16")
DEVICES = ("cpu", "cuda", "auto")
SOURCES = ("offline", "hub")
SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup")
#: LoRA target presets (``lora_targets``); an explicit list of module names is accepted too
LORA_TARGETS = {
    "attention": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "attention+mlp": ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj", "gate_proj"],
}
MAX_SEED = 2**32 - 1

_POINT = {"point": True}  # json_schema_extra of fields set per point / from the profile's top level


def _field(default, description: str, *, point: bool = False, **ranges) -> Any:
    return Field(default, description=description, json_schema_extra=_POINT if point else None, **ranges)


class StageConfig(BaseModel):
    """Base of every stage config: frozen, unknown keys refused, errors raised as ``ConfigError``."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)
    #: the YAML section this model is (used in error messages)
    section: ClassVar[str] = ""
    #: fields that never change a stage's result (left out of its cache key)
    not_in_key: ClassVar[frozenset] = frozenset({"device"})

    def __init__(self, **data):
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(explain(exc, type(self), self.section)) from None

    def with_(self, **changes) -> "StageConfig":
        """A validated copy with ``changes`` (``model_copy`` does not validate)."""
        return type(self)(**{**self.model_dump(), **changes})

    @classmethod
    def point_fields(cls) -> set[str]:
        """Fields set per experiment point or from the profile's top level (not allowed in the YAML section)."""
        return {n for n, f in cls.model_fields.items() if (f.json_schema_extra or {}).get("point")}

    @classmethod
    def section_fields(cls) -> list[str]:
        """Fields a complete YAML section must give."""
        return [n for n in cls.model_fields if n not in cls.point_fields()]


def explain(exc: ValidationError, model: type[BaseModel], section: str = "") -> str:
    """One line per error: ``align.lr=5.0: allowed range (0, 1] (AdamW learning rate). Fix: ...``."""
    lines = []
    for err in exc.errors():
        loc = [str(x) for x in err["loc"] if not isinstance(x, int)]
        name = ".".join(([section] if section else []) + loc)
        if not loc:  # a check across fields: its message names the fields and the fix
            lines.append(err["msg"].removeprefix("Value error, "))
            continue
        info = model.model_fields.get(loc[0]) if loc else None
        value = err.get("input")
        if err["type"] == "extra_forbidden":
            allowed = ", ".join(model.section_fields() if section else model.model_fields)
            lines.append(f"unknown field {name!r}; allowed fields: {allowed}. Fix: remove or rename it.")
            continue
        if err["type"] == "missing":
            lines.append(f"{name} is missing. Fix: give it a value"
                         + (f" ({info.description})" if info and info.description else "") + ".")
            continue
        rng = _range_text(info) if info is not None and len(loc) == 1 else ""
        what = f" ({info.description})" if info is not None and info.description and len(loc) == 1 else ""
        custom = err["type"] == "value_error"
        msg = err["msg"].removeprefix("Value error, ") if (custom or not rng) else f"allowed range {rng}"
        if err["type"] in ("literal_error", "enum"):
            msg = err["msg"].replace("Input should be", "allowed values:")
        lines.append(f"{name}={value!r} is out of range; {msg}{what}. Fix: set {name} to a value in that range.")
    return "\n".join(lines)


def _range_text(info) -> str:
    lo = hi = None
    lo_open = hi_open = False
    for m in info.metadata:
        if getattr(m, "ge", None) is not None:
            lo = m.ge
        if getattr(m, "gt", None) is not None:
            lo, lo_open = m.gt, True
        if getattr(m, "le", None) is not None:
            hi = m.le
        if getattr(m, "lt", None) is not None:
            hi, hi_open = m.lt, True
    if lo is None and hi is None:
        return ""
    return f"{'(' if lo_open else '['}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{')' if hi_open else ']'}"


def _max_steps(v: int) -> int:
    if v == 0 or v < -1:
        raise ValueError("allowed: -1 (train for `epochs`) or an integer >= 1")
    return v


def _tasks() -> tuple[str, ...]:
    from .data import TASKS

    return tuple(TASKS)


def _judges() -> tuple[str, ...]:
    from .judge import JUDGES

    return tuple(JUDGES)


Targets = Union[Literal["attention", "attention+mlp"], list[str]]


class TrainConfig(StageConfig):
    """Optimiser and adapter settings shared by the alignment and the fine-tuning stage."""

    epochs: float = _field(1.0, "training epochs (used when max_steps is -1)", gt=0, le=1000)
    max_steps: int = _field(-1, "optimizer steps; -1 = train for `epochs`", ge=-1, le=10**7)
    lr: float = _field(1e-3, "AdamW learning rate", gt=0, le=1)
    batch_size: int = _field(8, "per-device batch size", ge=1, le=4096)
    grad_accum: int = _field(1, "gradient accumulation steps", ge=1, le=1024)
    max_length: int = _field(128, "token limit of one training row (prompt + answer)", ge=16, le=8192)
    weight_decay: float = _field(0.1, "AdamW weight decay", ge=0, le=1)
    warmup_ratio: float = _field(0.1, "share of the steps with a linear learning-rate warm-up", ge=0, lt=1)
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = _field(
        "cosine", "learning-rate schedule")
    lora_r: int = _field(8, "LoRA rank", ge=1, le=1024)
    lora_alpha: float = _field(4.0, "LoRA scaling numerator (scale = alpha / r)", gt=0, le=4096)
    lora_dropout: float = _field(0.1, "LoRA dropout", ge=0, lt=1)
    lora_targets: Targets = _field("attention", "LoRA target modules: 'attention' (q/k/v/o), "
                                   "'attention+mlp' (q/k/v/o/up/down/gate) or a list of module names")
    seed: int = _field(42, "training seed (also the data draw)", point=True, ge=0, le=MAX_SEED)
    device: Literal["cpu", "cuda", "auto"] = _field("auto", "where to train ('auto': CUDA when present)", point=True)

    @field_validator("max_steps")
    @classmethod
    def _steps(cls, v):
        return _max_steps(v)

    @field_validator("lora_targets")
    @classmethod
    def _targets(cls, v):
        if isinstance(v, list) and not v:
            raise ValueError("give at least one module name, or 'attention' / 'attention+mlp'")
        return v

    def target_modules(self) -> list[str]:
        """``lora_targets`` as the module-name list ``vaccine_lib.lora.add_lora`` takes."""
        return list(LORA_TARGETS[self.lora_targets]) if isinstance(self.lora_targets, str) else list(self.lora_targets)


class AlignConfig(TrainConfig):
    """Stage 1 (service provider): LoRA alignment on harmful question -> safe answer + helpful pairs.

    ``method``: ``"none"`` (no alignment: the base model, for Non-Aligned), ``"sft"`` or ``"vaccine"``.
    Vaccine's ``rho`` / ``tau`` / ``perturbation`` are ignored by SFT (and left out of its cache key).
    """

    section: ClassVar[str] = "align"

    model: str = _field("smollm2-135m-instruct", "model registry name, Hub id or local folder", point=True)
    dtype: Literal["float32", "bfloat16", "float16"] = _field("float32", "weights dtype", point=True)
    source: Literal["offline", "hub"] = _field("offline", "data source of every stage", point=True)
    method: Literal["none", "sft", "vaccine"] = _field("sft", "alignment method", point=True)
    n: int = _field(256, "alignment samples", ge=1, le=10**6)
    helpful_fraction: float = _field(0.5, "helpful (non-refusal) share of the alignment set", ge=0, le=1)
    helpful: Literal["puzzles", "selfdistill"] = _field(
        "puzzles", "helpful half of the offline alignment set: 'puzzles' (templated reasoning-gym answers) or "
        "'selfdistill' (the base model's own answers to benign instructions; vaccine_lib.data.selfdistill)")
    rho: float = _field(2.0, "Vaccine perturbation radius (global L2 norm over layers and batch)", ge=0, le=1000)
    tau: int = _field(1, "Accelerated Vaccine: perturbed step every tau steps (1 = Algorithm 1)", point=True,
                      ge=1, le=10**6)
    perturbation: Literal["gradient", "gaussian"] = _field("gradient", "Vaccine perturbation (Table 7)", point=True)

    def effective(self) -> dict:
        """Fields that change the stage's result (what its cache key hashes)."""
        if self.method == "none":
            return {"model": self.model, "method": "none", "dtype": self.dtype}
        d = self.model_dump(exclude=set(self.not_in_key))
        if self.method == "sft":
            for k in ("rho", "tau", "perturbation"):
                d.pop(k)
        if not self.source == "offline":
            d.pop("helpful_fraction")  # the Hub alignment set has no helpful half
            d.pop("helpful")
        return d


class FinetuneConfig(TrainConfig):
    """Stage 2 (user): fine-tuning on ``n`` task samples, a share ``p`` harmful, with an optional defense.

    ``lora``: ``"double"`` (merge the alignment adapter, train a fresh one; paper default), ``"single"``
    (keep training the alignment adapter) or ``None`` = the paper's choice (single for EWC).
    ``per_task`` changes fields for one task (e.g. ``{"gsm8k": {"n": 4000, "epochs": 50, "lora_alpha": 0.5}}``)
    and is applied by :meth:`for_task`.
    """

    section: ClassVar[str] = "finetune"
    not_in_key: ClassVar[frozenset] = frozenset({"device", "per_task"})

    align: AlignConfig | None = _field(None, "the alignment stage this model starts from", point=True)
    defense: Literal["sft", "ewc", "vlguard", "kl"] = _field("sft", "fine-tuning defense", point=True)
    lora: Literal["double", "single"] | None = _field(None, "LoRA mode (None: single for EWC, else double)",
                                                      point=True)
    task: str = _field("sst2", "benign fine-tuning task")
    n: int = _field(100, "fine-tuning samples", ge=1, le=10**6)
    p: float = _field(0.1, "harmful ratio of the fine-tuning data", ge=0, le=1)
    ewc_lambda: float = _field(1e6, "EWC penalty weight", ge=0, le=1e12)
    ewc_fisher_samples: int = _field(64, "alignment samples for EWC's Fisher estimate", ge=1, le=10**5)
    kl_weight: float = _field(1e-3, "KL baseline weight", ge=0, le=1e3)
    vlguard_m: int = _field(32, "alignment samples Vlguard mixes into the user data", ge=1, le=10**6)
    drift_every: int = _field(0, "log drift every k steps during fine-tuning (0: off)", point=True, ge=0, le=10**6)
    drift_samples: int = _field(16, "probe samples of the drift log", point=True, ge=1, le=10**5)
    per_task: dict[str, dict[str, Any]] = _field({}, "per-task changes, e.g. {gsm8k: {n: 4000}}")

    @field_validator("task")
    @classmethod
    def _task(cls, v):
        tasks = _tasks()
        if v not in tasks:
            raise ValueError(f"allowed values: {', '.join(tasks)}")
        return v

    @field_validator("per_task")
    @classmethod
    def _per_task(cls, v):
        tasks = _tasks()
        allowed = {"n", "epochs", "max_steps", "max_length", "lr", "lora_alpha", "lora_r", "batch_size"}
        for t, changes in v.items():
            if t not in tasks:
                raise ValueError(f"per_task key {t!r}: allowed values: {', '.join(tasks)}")
            bad = sorted(set(changes) - allowed)
            if bad:
                raise ValueError(f"per_task.{t}: unknown field(s) {bad}; allowed fields: {', '.join(sorted(allowed))}")
        return v

    @model_validator(mode="after")
    def _combinations(self):
        a = self.align
        if a is not None and a.method == "none":
            if self.lora == "single":
                raise ValueError("lora='single' needs an alignment adapter; with align.method='none' use 'double'")
            if self.defense == "ewc":
                raise ValueError("defense='ewc' needs an aligned model (align.method 'sft' or 'vaccine')")
        if self.defense == "kl" and self.lora == "single":
            raise ValueError("defense='kl' compares with the aligned model (fine-tuning adapter disabled), "
                             "which needs lora='double' (or None)")
        return self

    def for_task(self, task: str) -> "FinetuneConfig":
        """This config for ``task`` with its ``per_task`` changes applied (and ``per_task`` cleared)."""
        changes = dict(self.per_task.get(task, {}))
        return self.with_(task=task, per_task={}, **changes)

    def lora_mode(self) -> str:
        """``lora``, or for ``None`` the paper's choice: Single-LoRA for EWC, Double-LoRA otherwise."""
        if self.lora is not None:
            return self.lora
        return "single" if self.defense == "ewc" and self.align is not None and self.align.method != "none" else "double"

    def effective(self) -> dict:
        """Fields that change the stage's result (what its cache key hashes; the alignment is upstream)."""
        d = self.model_dump(exclude=set(self.not_in_key) | {"align"})
        d["lora"] = self.lora_mode()
        if d["lora"] == "single":
            for k in ("lora_r", "lora_alpha", "lora_dropout", "lora_targets"):
                d.pop(k)
        if self.defense != "ewc":
            d.pop("ewc_lambda")
            d.pop("ewc_fisher_samples")
        if self.defense != "kl":
            d.pop("kl_weight")
        if self.defense != "vlguard":
            d.pop("vlguard_m")
        if self.drift_every <= 0:
            d.pop("drift_samples")
        return d


class EvalConfig(StageConfig):
    """Evaluation: Harmful Score on unseen harmful prompts, fine-tune accuracy on task test items."""

    section: ClassVar[str] = "eval"
    not_in_key: ClassVar[frozenset] = frozenset({"device", "rejudge"})

    n_harmful: int = _field(100, "harmful evaluation prompts", ge=1, le=10**5)
    n_task: int = _field(100, "task test items", ge=1, le=10**5)
    max_new_tokens: int = _field(64, "greedy generation length", ge=1, le=4096)
    batch_size: int = _field(16, "generation batch size", ge=1, le=4096)
    judge: str = _field("classifier", "Harmful Score judge")
    rejudge: list[str] = _field([], "further judges that re-judge the stored answers for the claims' verdicts and "
                                "the judges' agreement (notebooks 04 and 06; an HS verdict needs every judge)")
    task_max_new_tokens: int | None = _field(
        None, "generation length of the task answers (None: the task's default, TASK_MAX_NEW_TOKENS)", ge=1, le=4096)
    fa_choice: bool = _field(True, "also score label tasks by label likelihood (fa_choice; doubles the task cost)")
    n_benign: int = _field(0, "held-out benign instructions for the benign refusal rate (0: off)", ge=0, le=10**4)
    benign_max_new_tokens: int = _field(16, "generation length of the benign answers (a refusal shows early)",
                                        ge=1, le=4096)
    seed: int = _field(0, "which task test items are drawn", point=True, ge=0, le=MAX_SEED)
    device: Literal["cpu", "cuda", "auto"] = _field("auto", "where to evaluate", point=True)

    @field_validator("judge")
    @classmethod
    def _judge(cls, v):
        judges = _judges()
        if v not in judges:
            raise ValueError(f"allowed values: {', '.join(judges)}")
        return v

    @field_validator("rejudge")
    @classmethod
    def _rejudge(cls, v):
        judges = _judges()
        bad = [j for j in v if j not in judges]
        if bad:
            raise ValueError(f"unknown judge(s) {bad}; allowed values: {', '.join(judges)}")
        if len(set(v)) != len(v):
            raise ValueError("judges must be distinct")
        return v

    @model_validator(mode="after")
    def _distinct(self):
        if self.judge in self.rejudge:
            raise ValueError(f"rejudge lists the main judge {self.judge!r}; name only further judges")
        return self

    def effective(self) -> dict:
        return self.model_dump(exclude=set(self.not_in_key))


class DriftConfig(StageConfig):
    """Harmful embedding drift (paper section 3) on fixed probe samples."""

    section: ClassVar[str] = "drift"

    n_samples: int = _field(32, "probe samples for drift and alignment loss", ge=1, le=10**5)
    every_steps: int = _field(4, "log drift every k fine-tuning steps (Fig. 3)", ge=1, le=10**6)
    tsne_samples: int = _field(64, "alignment samples embedded for the t-SNE (Fig. 4)", ge=4, le=10**5)


class OverheadConfig(StageConfig):
    """Tables 5 / 10: per-step time and peak memory of SFT, Vaccine and Accelerated Vaccine."""

    section: ClassVar[str] = "overhead"

    steps: int = _field(6, "timed optimizer steps per method", ge=1, le=10**5)
    warmup_steps: int = _field(1, "untimed warm-up steps", ge=0, le=10**4)
    batch_size: int = _field(8, "batch size of the timed steps", ge=1, le=4096)
    seq_len: int = _field(128, "tokens per row of the timed steps", ge=8, le=8192)
    taus: list[int] = _field([5], "Accelerated Vaccine periods to time", min_length=1)

    @field_validator("taus")
    @classmethod
    def _taus(cls, v):
        if any(t < 1 for t in v):
            raise ValueError("every tau must be an integer >= 1")
        return v


#: the paper's method labels (Table 1) and the two stage settings each one means
@dataclass(frozen=True)
class Method:
    """A paper method = an alignment method + a fine-tuning defense (+ LoRA mode)."""

    label: str
    align: str  # none | sft | vaccine
    defense: str  # sft | ewc | vlguard | kl
    lora: str | None = None  # None: Single-LoRA for EWC, Double-LoRA otherwise


METHODS = {m.label: m for m in (
    Method("NA", "none", "sft"),
    Method("SFT", "sft", "sft"),
    Method("EWC", "sft", "ewc", "single"),
    Method("Vlguard", "sft", "vlguard"),
    Method("KL", "sft", "kl"),
    Method("Vaccine", "vaccine", "sft"),
)}
#: methods that run at every harmful ratio even when ``sweeps.baseline_ps`` is set (the others, Non-Aligned
#: included, run at ``baseline_ps``)
METHOD_LABELS = tuple(METHODS)


class Sweeps(StageConfig):
    """What the experiment registry sweeps (``vaccine_lib.grids``): methods, harmful ratios, ablations."""

    section: ClassVar[str] = "sweeps"

    defenses: list[Literal["NA", "SFT", "EWC", "Vlguard", "KL", "Vaccine"]] = _field(
        list(METHOD_LABELS), "methods of Table 1", min_length=1)
    ps: list[float] = _field([0.0, 0.1, 0.3], "harmful ratios of Table 1 / Fig. 2", min_length=1)
    baseline_ps: list[float] = _field([], "harmful ratios for NA / EWC / Vlguard / KL (empty: the same as ps)")
    method_ps: dict[Literal["NA", "SFT", "EWC", "Vlguard", "KL", "Vaccine"], list[float]] = _field(
        {}, "harmful ratios of single methods, replacing ps / baseline_ps for them (e.g. {Vaccine: [0.0, 0.3]})")
    tasks: list[str] = _field(["sst2"], "tasks of Table 4", min_length=1)
    sample_counts: list[int] = _field([64], "fine-tuning sample counts of Table 2", min_length=1)
    p_samples: float = _field(0.1, "harmful ratio of Table 2", ge=0, le=1)
    sample_defenses: list[Literal["NA", "SFT", "EWC", "Vlguard", "KL", "Vaccine"]] = _field(
        ["SFT", "Vaccine"], "methods of Table 2", min_length=1)
    rhos: list[float] = _field([2.0], "Vaccine rho values of Table 6", min_length=1)
    perturbations: list[Literal["gradient", "gaussian"]] = _field(
        ["gradient", "gaussian"], "perturbations of Table 7", min_length=1)
    lora_modes: list[Literal["double", "single"]] = _field(["double", "single"], "LoRA modes of Table 8",
                                                           min_length=1)
    lora_defenses: list[Literal["NA", "SFT", "EWC", "Vlguard", "KL", "Vaccine"]] = _field(
        ["SFT", "Vaccine"], "methods of Table 8", min_length=1)

    @field_validator("ps", "baseline_ps")
    @classmethod
    def _ratios(cls, v):
        if any(not (0 <= x <= 1) for x in v):
            raise ValueError("every harmful ratio must be in [0, 1]")
        return v

    @field_validator("method_ps")
    @classmethod
    def _method_ratios(cls, v):
        for label, ps in v.items():
            if not ps or any(not (0 <= x <= 1) for x in ps):
                raise ValueError(f"method_ps.{label}: give a non-empty list of harmful ratios in [0, 1]")
        return v

    @field_validator("rhos")
    @classmethod
    def _rhos(cls, v):
        if any(not (0 <= x <= 1000) or not math.isfinite(x) for x in v):
            raise ValueError("every rho must be in [0, 1000]")
        return v

    @field_validator("sample_counts")
    @classmethod
    def _counts(cls, v):
        if any(x < 1 for x in v):
            raise ValueError("every sample count must be an integer >= 1")
        return v

    @field_validator("tasks")
    @classmethod
    def _task_list(cls, v):
        tasks = _tasks()
        bad = [t for t in v if t not in tasks]
        if bad:
            raise ValueError(f"unknown task(s) {bad}; allowed values: {', '.join(tasks)}")
        return v


def dtype_of(name: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is present, else ``cpu``; ``cuda`` without a GPU is an error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' but no CUDA GPU is visible; allowed values here: cpu, auto. "
                          "Fix: set device: auto (or cpu) in the profile.")
    return device


def check_dtype_device(dtype: str, device: str) -> None:
    """Half precision on the CPU is refused (slow and imprecise: ~25x slower than float32 on this CPU)."""
    import torch

    on_cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    if dtype != "float32" and on_cpu:
        raise ConfigError(f"dtype={dtype!r} on the CPU (device={device!r}) is not supported; allowed on CPU: float32. "
                          "Fix: set dtype: float32, or run on a GPU (device: cuda).")

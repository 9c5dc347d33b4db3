"""Stage configs (one validated pydantic model per profile section; the stages cache on them) and the one home of
the choice lists and ``RANGES`` that ``data/``, ``judge/`` and ``models`` check against. Unknown keys are refused,
``1e-3`` (a string to PyYAML) is a number, a boolean is not; a bad value raises ``ConfigError`` naming the
parameter, its range, its meaning and the fix. ``point`` fields are set per experiment point, never in a section."""

from collections import namedtuple
from typing import Annotated, Any, ClassVar, Literal, Union, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import SEED_MAX, ConfigError, check_range, explain

ALIGN_METHODS = ("none", "sft", "vaccine")
DEFENSES = ("sft", "ewc", "vlguard", "kl")
LORA_MODES = ("double", "single")
PERTURBATIONS = ("gradient", "gaussian")
BUDGETS = ("global", "per_layer")
AUTOCAST = ("off", "bf16", "auto")  # resolved by vaccine_lib.hardware.resolve_autocast
DTYPES = ("float32", "bfloat16", "float16")
DEVICES = ("cpu", "cuda", "auto")
SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup")
HELPFUL = ("puzzles", "selfdistill")
SOURCES = ("offline", "hub")  # the embedded offline build, or the paper's Hugging Face datasets
TASKS = ("sst2", "agnews", "gsm8k", "alpaca")
OFFLINE_TASKS = ("sst2", "gsm8k")  # offline: Rotten Tomatoes and GSM-Symbolic
JUDGES = ("keyword", "classifier", "probe", "ensemble", "threeway", "stacked", "beaverdam")
MODELS = ("smollm2-135m-instruct", "gemma3-270m", "tiny-llama", "tiny-qwen2", "tiny-mistral", "tiny-gemma",
          "tiny-opt", "tiny-gpt2", "tiny-gptneox", "llama2-7b", "opt-2.7b", "vicuna-7b")
LORA_TARGETS = {"attention": ["q_proj", "k_proj", "v_proj", "o_proj"],
                "attention+mlp": ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj", "gate_proj"]}
#: closed ranges other modules check again (import, do not copy); rho: 100x the paper's largest swept value (10),
#: far above it the perturbed loss carries no signal and rho = 1e30 overflows float32. ewc_lambda: 1000x the
#: paper's 1e9; its penalty gradient lambda * F * (w - w*), F ~1e-3 and |w - w*| ~1e-3 after a few Adam steps, is
#: ~1e6 at 1e12 against ~1e-3 for a loss gradient. kl_weight: 1e6x the paper's 1e-3; at 1e3 a token KL of ~0.01
#: outweighs the SFT loss (~1) ten-fold, so the user's data no longer moves the model (to regularise harder, lower
#: the learning rate). Larger weights only add overflow risk (1e38 overflows float32).
RANGES = {"rho": (0, 1000), "p": (0, 1), "tau": (1, 10**6), "seed": (0, SEED_MAX), "ewc_lambda": (0, 1e12),
          "kl_weight": (0, 1e3)}


def check_param(name: str, value, param: str | None = None) -> None:
    """Raise ConfigError unless ``value`` lies in ``RANGES[name]``; ``param``: the caller's spelling (``--rho``)."""
    check_range(param or name, value, *RANGES[name])


def _field(default, description: str, *, point: bool = False, rng: str | None = None, **ranges) -> Any:
    if rng:
        ranges.update(ge=RANGES[rng][0], le=RANGES[rng][1])
    return Field(default, description=description, json_schema_extra={"point": True} if point else None, **ranges)


def _numeric(tp) -> bool:
    """True for an int / float annotation, also inside ``list[...]``, ``X | None``, ``dict[..., ...]``."""
    return tp in (int, float) or any(_numeric(a) for a in get_args(tp))


def _has_bool(v) -> bool:
    if isinstance(v, bool):
        return True
    items = v.values() if isinstance(v, dict) else v if isinstance(v, (list, tuple)) else ()
    return any(_has_bool(x) for x in items)


class Strict(BaseModel):
    """Base of the validated models: a boolean is never taken as a number (pydantic would read true as 1)."""

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, v, info):
        if _has_bool(v) and _numeric(cls.model_fields[info.field_name].annotation):
            raise ValueError("a boolean (true/false) is not a number")
        return v


class StageConfig(Strict):
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

    def speed_key(self, d: dict) -> dict:
        """Speed settings enter a cache key only when set, so every key from before they existed holds."""
        if d.get("autocast") == "off":
            d.pop("autocast")
        if d.get("answer_only_head") is False:
            d.pop("answer_only_head")
        return d

    @classmethod
    def point_fields(cls) -> set[str]:
        return {n for n, f in cls.model_fields.items() if (f.json_schema_extra or {}).get("point")}

    @classmethod
    def section_fields(cls) -> list[str]:
        return [n for n in cls.model_fields if n not in cls.point_fields()]


def rule(ok, message: str) -> AfterValidator:
    """For ``Annotated[T, rule(ok, message)]``: a value with ``not ok(value)`` fails with ``message``."""
    def run(v):
        if not ok(v):
            raise ValueError(message)
        return v
    return AfterValidator(run)


def _each_in(rng: str, what: str) -> AfterValidator:
    lo, hi = RANGES[rng]
    return rule(lambda v: all(lo <= x <= hi for x in v), f"every {what} must be in [{lo}, {hi}]")  # NaN fails


def _one_of(allowed, what: str = "") -> AfterValidator:
    return rule(lambda v: set(v if isinstance(v, list) else [v]) <= set(allowed),
                f"{f'unknown {what}; ' if what else ''}allowed values: {', '.join(allowed)}")


def _per_task(v):
    for t, changes in v.items():
        if t not in TASKS:
            raise ValueError(f"per_task key {t!r}: allowed values: {', '.join(TASKS)}")
        bad = sorted(set(changes) - set(PER_TASK_FIELDS))
        if bad:
            raise ValueError(f"per_task.{t}: unknown field(s) {bad}; allowed fields: {', '.join(PER_TASK_FIELDS)}")
        if _has_bool(changes):
            raise ValueError(f"per_task.{t}: a boolean (true/false) is not a number")
    return v


#: fields ``finetune.per_task`` may change for one task
PER_TASK_FIELDS = ("batch_size", "epochs", "lora_alpha", "lora_r", "lr", "max_length", "max_steps", "n")
Steps = Annotated[int, rule(lambda v: v != 0, "allowed: -1 (train for `epochs`) or an integer >= 1")]
Targets = Annotated[Union[Literal["attention", "attention+mlp"], list[str]],
                    rule(lambda v: v != [], "give at least one module name, or 'attention' / 'attention+mlp'")]
Judges = Annotated[list[str], _one_of(JUDGES, "judge(s)"),
                   rule(lambda v: len(set(v)) == len(v), "judges must be distinct")]
Ratios = Annotated[list[float], _each_in("p", "harmful ratio")]


class TrainConfig(StageConfig):
    """Optimiser and adapter settings shared by the alignment and the fine-tuning stage."""

    epochs: float = _field(1.0, "training epochs (used when max_steps is -1)", gt=0, le=1000)
    max_steps: Steps = _field(-1, "optimizer steps; -1 = train for `epochs`", ge=-1, le=10**7)
    lr: float = _field(1e-3, "AdamW learning rate", gt=0, le=1)
    batch_size: int = _field(8, "per-device batch size", ge=1, le=4096)
    grad_accum: int = _field(1, "gradient accumulation steps", ge=1, le=1024)
    max_length: int = _field(128, "token limit of one training row (prompt + answer)", ge=16, le=8192)
    weight_decay: float = _field(0.1, "AdamW weight decay", ge=0, le=1)
    warmup_ratio: float = _field(0.1, "share of the steps with a linear learning-rate warm-up", ge=0, lt=1)
    lr_scheduler: Literal[SCHEDULERS] = _field("cosine", "learning-rate schedule")
    lora_r: int = _field(8, "LoRA rank", ge=1, le=1024)
    lora_alpha: float = _field(4.0, "LoRA scaling numerator (scale = alpha / r)", gt=0, le=4096)
    lora_dropout: float = _field(0.1, "LoRA dropout", ge=0, lt=1)
    lora_targets: Targets = _field("attention", "LoRA target modules: 'attention' (q/k/v/o), "
                                   "'attention+mlp' (q/k/v/o/up/down/gate) or a list of module names")
    seed: int = _field(42, "training seed (also the data draw)", point=True, rng="seed")
    device: Literal[DEVICES] = _field("auto", "where to train ('auto': CUDA when present)", point=True)
    autocast: Literal[AUTOCAST] = _field("off", "mixed precision: 'bf16' autocast (fp32 weights), 'auto' = bf16 "
                                         "where the hardware has bf16 units (vaccine_lib.hardware), 'off'")
    answer_only_head: bool = _field(False, "run the output layer and the loss on answer tokens only (the same loss "
                                           "and gradients, a cheaper step; vaccine_lib.losses)")

    def target_modules(self) -> list[str]:
        """``lora_targets`` as the module-name list ``vaccine_lib.lora.add_lora`` takes."""
        return list(LORA_TARGETS[self.lora_targets]) if isinstance(self.lora_targets, str) else list(self.lora_targets)


class AlignConfig(TrainConfig):
    """Stage 1 (service provider): LoRA alignment on harmful question -> safe answer + helpful pairs; ``method``
    ``"none"`` is the base model (Non-Aligned); SFT ignores Vaccine's fields (and leaves them out of its key)."""

    section: ClassVar[str] = "align"

    model: str = _field("smollm2-135m-instruct", "model registry name, Hub id or local folder", point=True)
    dtype: Literal[DTYPES] = _field("float32", "weights dtype", point=True)
    source: Literal[SOURCES] = _field("offline", "data source of every stage", point=True)
    method: Literal[ALIGN_METHODS] = _field("sft", "alignment method", point=True)
    n: int = _field(256, "alignment samples", ge=1, le=10**6)
    helpful_fraction: float = _field(0.5, "helpful (non-refusal) share of the alignment set", ge=0, le=1)
    helpful: Literal[HELPFUL] = _field("puzzles", "helpful half of the offline alignment set: 'puzzles' (templated "
                                       "reasoning-gym answers) or 'selfdistill' (the base model's own answers)")
    rho: float = _field(2.0, "Vaccine perturbation radius (global L2 norm over layers and batch)", rng="rho")
    tau: int = _field(1, "Accelerated Vaccine: perturbed step every tau steps (1 = Algorithm 1)", point=True, rng="tau")
    perturbation: Literal[PERTURBATIONS] = _field("gradient", "Vaccine perturbation (Table 7)", point=True)
    budget: Literal[BUDGETS] = _field("global", "how rho is shared over layers: 'global' (Eq. 3) or 'per_layer' "
                                      "(rho / sqrt(L) each, the even-split ablation)", point=True)

    def effective(self) -> dict:
        """Fields that change the stage's result (what its cache key hashes)."""
        if self.method == "none":
            return {"model": self.model, "method": "none", "dtype": self.dtype}
        d = self.model_dump(exclude=set(self.not_in_key))
        if self.method == "sft":
            for k in ("rho", "tau", "perturbation", "budget"):
                d.pop(k)
        if d.get("budget") == "global":
            d.pop("budget")  # the default enters no key, so every key from before the field holds
        if not self.source == "offline":
            d.pop("helpful_fraction")  # the Hub alignment set has no helpful half
            d.pop("helpful")
        return self.speed_key(d)


class FinetuneConfig(TrainConfig):
    """Stage 2 (user): fine-tuning on ``n`` task samples, a share ``p`` harmful, with an optional defense. ``lora``
    ``"double"`` merges the alignment adapter and trains a fresh one (paper default), ``"single"`` keeps training it."""

    section: ClassVar[str] = "finetune"
    not_in_key: ClassVar[frozenset] = frozenset({"device", "per_task"})

    align: AlignConfig | None = _field(None, "the alignment stage this model starts from", point=True)
    defense: Literal[DEFENSES] = _field("sft", "fine-tuning defense", point=True)
    lora: Literal[LORA_MODES] | None = _field(None, "LoRA mode (None: single for EWC, else double)", point=True)
    task: Annotated[str, _one_of(TASKS)] = _field("sst2", "benign fine-tuning task")
    n: int = _field(100, "fine-tuning samples", ge=1, le=10**6)
    p: float = _field(0.1, "harmful ratio of the fine-tuning data", rng="p")
    ewc_lambda: float = _field(1e6, "EWC penalty weight", rng="ewc_lambda")
    ewc_fisher_samples: int = _field(64, "alignment samples for EWC's Fisher estimate", ge=1, le=10**5)
    kl_weight: float = _field(1e-3, "KL baseline weight", rng="kl_weight")
    vlguard_m: int = _field(32, "alignment samples Vlguard mixes into the user data", ge=1, le=10**6)
    drift_every: int = _field(0, "log drift every k steps during fine-tuning (0: off)", point=True, ge=0, le=10**6)
    drift_samples: int = _field(16, "probe samples of the drift log", point=True, ge=1, le=10**5)
    per_task: Annotated[dict[str, dict[str, Any]], AfterValidator(_per_task)] = _field(
        {}, "per-task changes, e.g. {gsm8k: {n: 4000}}")

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
        return self.with_(task=task, per_task={}, **self.per_task.get(task, {}))

    def lora_mode(self) -> str:
        """``lora``, or for ``None`` the paper's choice: Single-LoRA for EWC, Double-LoRA otherwise."""
        if self.lora is not None:
            return self.lora
        aligned = self.align is not None and self.align.method != "none"
        return "single" if self.defense == "ewc" and aligned else "double"

    def effective(self) -> dict:
        """Fields that change the stage's result (what its cache key hashes; the alignment is upstream)."""
        d = self.model_dump(exclude=set(self.not_in_key) | {"align"})
        d["lora"] = self.lora_mode()
        keep = {"ewc_lambda": self.defense == "ewc", "ewc_fisher_samples": self.defense == "ewc",
                "kl_weight": self.defense == "kl", "vlguard_m": self.defense == "vlguard",
                "drift_samples": self.drift_every > 0}
        keep.update(dict.fromkeys(("lora_r", "lora_alpha", "lora_dropout", "lora_targets"), d["lora"] != "single"))
        return self.speed_key({k: v for k, v in d.items() if keep.get(k, True)})


class EvalConfig(StageConfig):
    """Evaluation: Harmful Score on unseen harmful prompts, fine-tune accuracy on task test items."""

    section: ClassVar[str] = "eval"
    not_in_key: ClassVar[frozenset] = frozenset({"device", "rejudge"})

    n_harmful: int = _field(100, "harmful evaluation prompts", ge=1, le=10**5)
    n_task: int = _field(100, "task test items", ge=1, le=10**5)
    max_new_tokens: int = _field(64, "greedy generation length", ge=1, le=4096)
    batch_size: int = _field(16, "generation batch size", ge=1, le=4096)
    judge: Annotated[str, _one_of(JUDGES)] = _field("classifier", "Harmful Score judge")
    rejudge: Judges = _field([], "further judges that re-judge the stored answers for the claims' verdicts and "
                                "the judges' agreement (notebooks 04 and 06; an HS verdict needs every judge)")
    task_max_new_tokens: int | None = _field(
        None, "generation length of the task answers (None: the task's default, TASK_MAX_NEW_TOKENS)", ge=1, le=4096)
    fa_choice: bool = _field(True, "also score label tasks by label likelihood (fa_choice; doubles the task cost)")
    n_benign: int = _field(0, "held-out benign instructions for the benign refusal rate (0: off)", ge=0, le=10**4)
    benign_max_new_tokens: int = _field(16, "generation length of the benign answers (a refusal shows early)",
                                        ge=1, le=4096)
    seed: int = _field(0, "which task test items are drawn", point=True, rng="seed")
    device: Literal[DEVICES] = _field("auto", "where to evaluate", point=True)
    autocast: Literal[AUTOCAST] = _field("off", "generation under bf16 autocast ('auto': where the hardware has bf16 "
                                         "units, vaccine_lib.hardware; the judges stay fp32), 'off'")

    @model_validator(mode="after")
    def _distinct(self):
        if self.judge in self.rejudge:
            raise ValueError(f"rejudge lists the main judge {self.judge!r}; name only further judges")
        return self

    def effective(self) -> dict:
        return self.speed_key(self.model_dump(exclude=set(self.not_in_key)))


class DriftConfig(StageConfig):
    """Harmful embedding drift (paper section 3) on fixed probe samples."""

    section: ClassVar[str] = "drift"

    n_samples: int = _field(32, "probe samples for drift and alignment loss", ge=1, le=10**5)
    every_steps: int = _field(4, "log drift every k fine-tuning steps (Fig. 3)", ge=1, le=10**6)
    tsne_samples: int = _field(64, "alignment samples embedded for the t-SNE (Fig. 4)", ge=4, le=10**5)


class OverheadConfig(StageConfig):
    """Tables 5 / 10: per-step time and peak memory of SFT, Vaccine and Accelerated Vaccine."""

    section: ClassVar[str] = "overhead"

    steps: int = _field(6, "timed optimizer steps per method and round", ge=1, le=10**5)
    warmup_steps: int = _field(1, "untimed warm-up steps", ge=0, le=10**4)
    batch_size: int = _field(8, "batch size of the timed steps", ge=1, le=4096)
    seq_len: int = _field(128, "tokens per row of the timed steps", ge=8, le=8192)
    taus: Annotated[list[int], _each_in("tau", "tau")] = _field([5], "Accelerated Vaccine periods to time",
                                                                min_length=1)
    rounds: int = _field(1, "rounds of all methods, in alternating order (a drift of the machine's speed then "
                         "falls on every method alike)", ge=1, le=100)


#: a paper method (Table 1 label) = an alignment method (none | sft | vaccine) + a fine-tuning defense (sft | ewc |
#: vlguard | kl) + a LoRA mode (None: Single-LoRA for EWC, Double-LoRA otherwise)
Method = namedtuple("Method", "label align defense lora", defaults=[None])
METHODS = {m.label: m for m in (
    Method("NA", "none", "sft"), Method("SFT", "sft", "sft"), Method("EWC", "sft", "ewc", "single"),
    Method("Vlguard", "sft", "vlguard"), Method("KL", "sft", "kl"), Method("Vaccine", "vaccine", "sft"))}
Label = Literal[tuple(METHODS)]


class Sweeps(StageConfig):
    """What the experiment registry sweeps: methods, harmful ratios, ablations."""

    section: ClassVar[str] = "sweeps"

    defenses: list[Label] = _field(list(METHODS), "methods of Table 1", min_length=1)
    ps: Ratios = _field([0.0, 0.1, 0.3], "harmful ratios of Table 1 / Fig. 2", min_length=1)
    baseline_ps: Ratios = _field([], "harmful ratios for NA / EWC / Vlguard / KL (empty: the same as ps)")
    method_ps: dict[Label, Annotated[Ratios, rule(bool, "give a non-empty list of harmful ratios")]] = _field(
        {}, "harmful ratios of single methods, replacing ps / baseline_ps for them (e.g. {Vaccine: [0.0, 0.3]})")
    tasks: Annotated[list[str], _one_of(TASKS, "task(s)")] = _field(["sst2"], "tasks of Table 4", min_length=1)
    sample_counts: Annotated[list[int], rule(lambda v: all(x >= 1 for x in v), "every sample count must be >= 1")] \
        = _field([64], "fine-tuning sample counts of Table 2", min_length=1)
    p_samples: float = _field(0.1, "harmful ratio of Table 2", rng="p")
    sample_defenses: list[Label] = _field(["SFT", "Vaccine"], "methods of Table 2", min_length=1)
    rhos: Annotated[list[float], _each_in("rho", "rho")] = _field([2.0], "Vaccine rho values of Table 6", min_length=1)
    perturbations: list[Literal[PERTURBATIONS]] = _field(["gradient", "gaussian"], "perturbations of Table 7",
                                                         min_length=1)
    lora_modes: list[Literal[LORA_MODES]] = _field(["double", "single"], "LoRA modes of Table 8", min_length=1)
    lora_defenses: list[Label] = _field(["SFT", "Vaccine"], "methods of Table 8", min_length=1)


# torch is imported inside the three functions below: it takes ~2.5 s, and config is imported by every CLI
# (dry runs, `data info`, --help) that never touches a tensor.
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

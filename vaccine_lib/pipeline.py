"""Cached experiment stages: ``align`` -> ``finetune`` -> ``evaluate`` (+ ``drift``).

Every stage is a pure function of a config dataclass. Its output folder is named by a hash of
the *full* configuration (every field, the upstream stage's hash, ``vaccine_lib.__version__``
and a hash of the source files the stage runs), so

- a rerun with the same config returns the stored result (``StageResult.cached = True``),
- a changed fine-tuning parameter reruns fine-tuning (and evaluation) but not alignment,
  because ``FinetuneConfig`` embeds the hash of its ``AlignConfig``,
- an interrupted stage is never mistaken for a finished one: a stage is written into a
  ``.tmp-*`` folder, ``done.json`` is written last, and the folder is renamed into place in one
  step (``vaccine_lib.models.atomic_save_dir``). A folder without ``done.json`` is ignored
  (and replaced).

Layout under ``run_dir``::

    align/<model>-<method>-<hash>/      adapter/ (alignment LoRA), config.json, metrics.json,
                                        log_history.json, done.json
    finetune/<model>-<defense>-<task>-p<p>-<hash>/   adapter/ (fine-tune LoRA), ...
    eval/<hash>/                        metrics.json, generations.jsonl, done.json
    drift/<hash>/                       metrics.json, done.json

Only LoRA adapters are stored, never full models: the aligned model is rebuilt as
base + merged alignment adapter (Double-LoRA), then the fine-tuning adapter is loaded on top.

Typical use (a notebook)::

    from vaccine_lib.pipeline import AlignConfig, FinetuneConfig, EvalConfig, align, finetune, evaluate
    a = AlignConfig(method="vaccine", rho=2.0)
    ft = FinetuneConfig(align=a, p=0.1)
    res = finetune(ft, "runs/demo")          # runs align(a) first if it is not cached
    metrics = evaluate(ft, EvalConfig(), "runs/demo")
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, Union

from .errors import ConfigError, check_choice, check_range

ALIGN_METHODS = ("none", "sft", "vaccine")
DEFENSES = ("sft", "ewc", "vlguard", "kl")
LORA_MODES = ("double", "single")
PERTURBATIONS = ("gradient", "gaussian")

#: bump when a stage's on-disk format changes (part of every hash)
STAGE_FORMAT = 1


# --------------------------------------------------------------------------- configs


@dataclass(frozen=True)
class AlignConfig:
    """Alignment stage (service provider): LoRA fine-tuning on harmful-question -> safe-answer pairs.

    Attributes:
        model: registry name (``vaccine_lib.models``), Hub id or local path.
        method: ``"none"`` (Non-Aligned: no training, the base model), ``"sft"`` or ``"vaccine"``.
        rho: Vaccine perturbation radius (paper default 2). Ignored by ``"sft"``.
        tau: Accelerated Vaccine: perturbed step every ``tau`` steps (1 = every step, Algorithm 1).
        perturbation: ``"gradient"`` (Vaccine) or ``"gaussian"`` (Table 7 ablation).
        n_align: number of alignment samples (``vaccine_lib.data.alignment_set``).
        helpful_fraction: fraction of helpful (non-refusal) samples in the alignment set, if the
            data module supports it (see miniature notes, pitfall 1).
        epochs, max_steps: training length (``max_steps > 0`` overrides ``epochs``).
        lr, batch_size, max_length: AdamW learning rate, per-device batch, token limit.
        weight_decay, warmup_ratio, lr_scheduler: optimiser schedule (paper: 0.1, 0.1, cosine).
        lora_r, lora_alpha, lora_dropout: alignment adapter (paper: 8, 4, 0.1; the reference
            code silently changed alpha to 1 - we keep 4).
        seed: seeds python/numpy/torch and the Trainer.
    """

    model: str = "smollm2-135m-instruct"
    method: str = "sft"
    rho: float = 2.0
    tau: int = 1
    perturbation: str = "gradient"
    n_align: int = 400
    helpful_fraction: float = 0.5
    epochs: float = 1
    max_steps: int = -1
    lr: float = 1e-3
    batch_size: int = 8
    max_length: int = 128
    weight_decay: float = 0.1
    warmup_ratio: float = 0.1
    lr_scheduler: str = "cosine"
    lora_r: int = 8
    lora_alpha: int = 4
    lora_dropout: float = 0.1
    seed: int = 42

    def validate(self) -> "AlignConfig":
        check_choice("method", self.method, ALIGN_METHODS)
        check_choice("perturbation", self.perturbation, PERTURBATIONS)
        check_range("rho", self.rho, 0, float("inf"))
        check_range("tau", self.tau, 1, 10**9)
        check_range("helpful_fraction", self.helpful_fraction, 0, 1)
        check_range("n_align", self.n_align, 1, 10**9)
        return self


@dataclass(frozen=True)
class FinetuneConfig:
    """User fine-tuning stage: a fresh (Double-LoRA) or continued (Single-LoRA) adapter trained on
    ``n`` task samples of which a fraction ``p`` is harmful, with an optional defense.

    Attributes:
        align: the alignment stage this model starts from (its hash is part of this one's).
        defense: ``"sft"`` (plain), ``"ewc"``, ``"vlguard"`` or ``"kl"`` (Appendix B.2).
        task: benign task (``vaccine_lib.data.TASKS``, e.g. ``"sst2"``, ``"gsm8k"``).
        n, p: number of fine-tuning samples and harmful ratio.
        epochs, max_steps, lr, batch_size, max_length, weight_decay, warmup_ratio, lr_scheduler:
            training (miniature: lr 5e-4 for 2 epochs; the paper uses 1e-5 for 20 epochs).
        lora: ``"double"`` (merge the alignment adapter, train a fresh one; paper default) or
            ``"single"`` (keep training the alignment adapter; EWC in the paper).
        lora_r, lora_alpha, lora_dropout: the fresh fine-tuning adapter (Double-LoRA only).
        ewc_lambda: EWC penalty weight (see ``vaccine_lib.baselines.EWCConfig``).
        kl_weight: KL baseline weight (paper 1e-3).
        vlguard_m: alignment samples mixed into the user data by Vlguard (paper 500 into 1000;
            ``None`` = ``n // 2``, the same ratio).
        seed: training seed (the data mix uses it too).
        drift_every: >0 logs embedding drift and alignment loss every k steps (``DriftCallback``).
        drift_samples: alignment samples used by the callback.
    """

    align: AlignConfig = field(default_factory=AlignConfig)
    defense: str = "sft"
    task: str = "sst2"
    n: int = 100
    p: float = 0.1
    epochs: float = 2
    max_steps: int = -1
    lr: float = 5e-4
    batch_size: int = 8
    max_length: int = 128
    weight_decay: float = 0.1
    warmup_ratio: float = 0.1
    lr_scheduler: str = "cosine"
    lora: str = "double"
    lora_r: int = 8
    lora_alpha: int = 8
    lora_dropout: float = 0.1
    ewc_lambda: float = 1e4
    kl_weight: float = 1e-3
    vlguard_m: int | None = None
    seed: int = 42
    drift_every: int = 0
    drift_samples: int = 16

    def validate(self) -> "FinetuneConfig":
        self.align.validate()
        check_choice("defense", self.defense, DEFENSES)
        check_choice("lora", self.lora, LORA_MODES)
        check_range("p", self.p, 0, 1)
        check_range("n", self.n, 1, 10**9)
        check_range("ewc_lambda", self.ewc_lambda, 0, float("inf"))
        check_range("kl_weight", self.kl_weight, 0, float("inf"))
        if self.lora == "single" and self.align.method == "none":
            raise ConfigError("lora='single' needs an alignment adapter; with align.method='none' use lora='double'")
        if self.defense == "ewc" and self.align.method == "none":
            raise ConfigError("defense='ewc' needs an aligned model (align.method 'sft' or 'vaccine')")
        return self


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation: Harmful Score on unseen harmful prompts + fine-tune accuracy on the task.

    Attributes:
        n_harmful: harmful evaluation prompts (paper 500).
        n_task: task test items (paper 500).
        max_new_tokens: greedy generation length (paper 128).
        judge: ``vaccine_lib.judge`` name (``"keyword"``, ``"classifier"``, ``"beaverdam"``).
        batch_size: generation batch size.
        seed: which task test items are drawn.
    """

    n_harmful: int = 100
    n_task: int = 100
    max_new_tokens: int = 64
    judge: str = "classifier"
    batch_size: int = 16
    seed: int = 0


@dataclass
class StageResult:
    """What a stage returns (also what it stored on disk).

    Attributes:
        path: the stage folder (``None`` for the untrained ``method="none"`` alignment).
        config: the stage config as a plain dict (what was hashed, minus code hashes).
        metrics: final numbers (e.g. ``train_loss``, ``align_loss``, ``train_seconds``).
        log_history: the Trainer's log history (per-step loss, lr, grad norm, drift...).
        cached: True when the result was read from disk without running anything.
        key: the stage hash.
    """

    path: Path | None
    config: dict
    metrics: dict
    log_history: list = field(default_factory=list)
    cached: bool = False
    key: str = ""
    stage: str = ""


Target = Union[AlignConfig, FinetuneConfig, StageResult]


# --------------------------------------------------------------------------- hashing

_PKG_ROOT = Path(__file__).resolve().parent

#: source modules each stage runs (a change to any of them changes the stage hash)
ALIGN_SOURCES = ("models", "data", "lora", "vaccine", "pipeline")
FINETUNE_SOURCES = ALIGN_SOURCES + ("baselines", "drift")
EVAL_SOURCES = ("models", "data", "lora", "evaluation", "judge", "pipeline")
DRIFT_SOURCES = ("models", "data", "lora", "drift", "pipeline")


def source_hash(modules: Sequence[str]) -> str:
    """sha256 over the bytes of the named ``vaccine_lib`` modules (``x.py`` or package ``x/``)."""
    h = hashlib.sha256()
    for name in sorted(modules):
        files = []
        if (_PKG_ROOT / f"{name}.py").is_file():
            files.append(_PKG_ROOT / f"{name}.py")
        if (_PKG_ROOT / name).is_dir():
            files.extend(sorted((_PKG_ROOT / name).rglob("*.py")))
        for f in files:
            h.update(str(f.relative_to(_PKG_ROOT)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _data_version() -> str:
    """Hash of the processed-data manifest (so rebuilt data invalidates trained stages)."""
    for cand in (_PKG_ROOT.parent / "data" / "processed" / "manifest.json",):
        if cand.is_file():
            return hashlib.sha256(cand.read_bytes()).hexdigest()[:16]
    return "none"


def _effective(cfg) -> dict:
    """The fields that influence a stage's output (irrelevant ones dropped so they don't force reruns)."""
    if isinstance(cfg, AlignConfig):
        d = dataclasses.asdict(cfg)
        if cfg.method == "none":
            return {"model": cfg.model, "method": "none"}
        if cfg.method == "sft":
            for k in ("rho", "tau", "perturbation"):
                d.pop(k)
        return d
    if isinstance(cfg, FinetuneConfig):
        d = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "align"}
        d["lora"] = resolve_lora_mode(cfg)
        if d["lora"] == "single":
            for k in ("lora_r", "lora_alpha", "lora_dropout"):
                d.pop(k)
        if cfg.defense != "ewc":
            d.pop("ewc_lambda")
        if cfg.defense != "kl":
            d.pop("kl_weight")
        if cfg.defense != "vlguard":
            d.pop("vlguard_m")
        else:
            d["vlguard_m"] = vlguard_m(cfg)
        if cfg.drift_every <= 0:
            d.pop("drift_samples")
        return d
    if isinstance(cfg, EvalConfig):
        return dataclasses.asdict(cfg)
    raise TypeError(f"not a stage config: {type(cfg).__name__}")


def _key(stage: str, cfg, sources: Sequence[str], upstream: str = "", extra: dict | None = None) -> str:
    from . import __version__

    payload = {
        "stage": stage, "format": STAGE_FORMAT, "version": __version__, "code": source_hash(sources),
        "data": _data_version(), "config": _effective(cfg), "upstream": upstream, "extra": extra or {},
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def align_key(cfg: AlignConfig) -> str:
    """Stage hash of an alignment config (stable across processes and machines)."""
    return _key("align", cfg.validate(), ALIGN_SOURCES)


def finetune_key(cfg: FinetuneConfig) -> str:
    """Stage hash of a fine-tuning config; embeds ``align_key(cfg.align)``."""
    return _key("finetune", cfg.validate(), FINETUNE_SOURCES, upstream=align_key(cfg.align))


def resolve_lora_mode(cfg: FinetuneConfig) -> str:
    """``cfg.lora``; ``"single"`` is impossible without an alignment adapter."""
    return cfg.lora


def vlguard_m(cfg: FinetuneConfig) -> int:
    """Alignment samples Vlguard mixes in (``None`` -> ``n // 2``, the paper's 500 : 1000 ratio)."""
    return cfg.n // 2 if cfg.vlguard_m is None else int(cfg.vlguard_m)


def stage_dir(run_dir, stage: str, cfg) -> Path:
    """Folder of a stage (finished or not) under ``run_dir``."""
    run_dir = Path(run_dir)
    if stage == "align":
        return run_dir / "align" / f"{_slug(cfg.model)}-{cfg.method}-{align_key(cfg)}"
    if stage == "finetune":
        a = cfg.align
        name = f"{_slug(a.model)}-{a.method}-{cfg.defense}-{cfg.task}-p{cfg.p:g}-{finetune_key(cfg)}"
        return run_dir / "finetune" / name
    raise ConfigError(f"unknown stage {stage!r}")


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(s))[-40:]


def is_done(path: Path) -> bool:
    """A stage counts as finished only if its ``done.json`` exists (written last)."""
    return (Path(path) / "done.json").is_file()


def _read_result(path: Path, stage: str, key: str) -> StageResult:
    def load(name, default):
        f = path / name
        return json.loads(f.read_text()) if f.is_file() else default

    return StageResult(path=path, config=load("config.json", {}), metrics=load("metrics.json", {}),
                       log_history=load("log_history.json", []), cached=True, key=key, stage=stage)


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1, sort_keys=True, default=str))


def _finish(tmp: Path, stage: str, key: str, config: dict, metrics: dict, log_history: list) -> None:
    """Write the stage's json files; ``done.json`` last."""
    _write_json(tmp / "config.json", config)
    _write_json(tmp / "metrics.json", metrics)
    _write_json(tmp / "log_history.json", log_history)
    _write_json(tmp / "done.json", {"stage": stage, "key": key, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})


def _run_stage(path: Path, stage: str, key: str, write) -> StageResult:
    """Return the cached stage at ``path`` or run ``write(tmp) -> (config, metrics, log_history)``."""
    import shutil

    from .models import atomic_save_dir

    if is_done(path):
        return _read_result(path, stage, key)
    if path.exists():  # left over from an interrupted run (no done.json): redo it
        shutil.rmtree(path)

    def writer(tmp: Path) -> None:
        config, metrics, log_history = write(tmp)
        _finish(tmp, stage, key, config, metrics, log_history)

    atomic_save_dir(path, writer)
    res = _read_result(path, stage, key)
    res.cached = False
    return res


# --------------------------------------------------------------------------- stages (public API)


def align(cfg: AlignConfig, run_dir) -> StageResult:
    """Alignment stage (cached). ``method="none"`` trains nothing and returns ``path=None``.

    Stores the alignment LoRA adapter under ``<path>/adapter``; ``metrics`` holds ``train_loss``
    (Trainer average), ``final_loss`` (last logged step), ``align_loss`` (clean loss of the
    aligned model on its alignment data, eval mode), ``train_seconds``, ``steps``.
    """
    cfg.validate()
    key = align_key(cfg)
    if cfg.method == "none":
        return StageResult(path=None, config=_effective(cfg), metrics={}, log_history=[], cached=True,
                           key=key, stage="align")
    path = stage_dir(run_dir, "align", cfg)
    return _run_stage(path, "align", key, lambda tmp: _train_align(cfg, tmp))


def finetune(cfg: FinetuneConfig, run_dir) -> StageResult:
    """User fine-tuning stage (cached); runs ``align(cfg.align)`` first if it is not cached.

    Stores the fine-tuning adapter under ``<path>/adapter`` (Double-LoRA: the fresh adapter on
    top of base + merged alignment adapter; Single-LoRA: the continued alignment adapter).
    ``metrics`` holds ``train_loss``, ``final_loss``, ``train_seconds``, ``steps``,
    ``n_train`` and, with ``drift_every > 0``, the last logged ``drift_*`` / ``align_loss``.
    """
    cfg.validate()
    key = finetune_key(cfg)
    path = stage_dir(run_dir, "finetune", cfg)
    if is_done(path):
        return _read_result(path, "finetune", key)
    upstream = align(cfg.align, run_dir)
    return _run_stage(path, "finetune", key, lambda tmp: _train_finetune(cfg, upstream, run_dir, tmp))


def load_stage_model(target: Target, run_dir, merge: bool = False, device: str | None = None):
    """(model, tokenizer) of a stage, training it first if it is not cached.

    - ``AlignConfig`` (or its result): base + merged alignment adapter (plain model); the base
      model itself for ``method="none"``.
    - ``FinetuneConfig`` (or its result): Double-LoRA: base + merged alignment adapter + the
      fine-tuning adapter (a ``PeftModel``; ``model.disable_adapter()`` gives the aligned model);
      Single-LoRA: base + continued adapter. ``merge=True`` merges everything into a plain model.
    """
    ...


def evaluate(target: Target, eval_cfg: EvalConfig | None = None, run_dir=".", tasks: Sequence[str] | None = None) -> dict:
    """Harmful Score / refusal / label-only rates and fine-tune accuracy of a stage's model (cached).

    ``tasks`` defaults to the fine-tuning task (for a ``FinetuneConfig``) or none (for an
    ``AlignConfig``). Results also go to ``vaccine_lib.evaluation.ResultsStore(run_dir)`` so
    ``collect_results(run_dir)`` tabulates them. Returns a flat dict of metrics (percentages).
    """
    ...


def drift(ft_cfg: FinetuneConfig, run_dir, n_samples: int = 50) -> dict:
    """Harmful embedding drift of the fine-tuned model vs its aligned model (vs the base model for
    Non-Aligned) on ``n_samples`` fixed alignment samples (cached).

    Returns ``drift_sum_sq`` (the reference's summed squared L2 over layers and samples),
    ``drift_per_token`` (normalised, comparable across model sizes), ``align_loss`` of the
    fine-tuned model and ``align_loss_before`` of the aligned model.
    """
    ...

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
- under a multi-process launch (``torchrun`` / ``accelerate launch``, e.g. ``python -m vaccine_lib.train``)
  every rank trains a stage together (DDP), only rank 0 writes it, the other ranks wait and then read
  the finished stage; evaluation and drift run on rank 0 alone (``_run_stage_ranked``).

Layout under ``run_dir``::

    align/<model>-<method>-<hash>/      adapter/ (alignment LoRA), config.json, metrics.json,
                                        log_history.json, done.json
    finetune/<model>-<method>-<defense>-<task>-p<p>-<hash>/   adapter/ (fine-tune LoRA), ...
    eval/<hash>/                        config.json, metrics.json, done.json
    drift/<hash>/                       config.json, metrics.json, done.json
    results/, generations/              evaluation records (``vaccine_lib.evaluation.ResultsStore``)

The hash covers: every config field that changes the result (fields a method ignores, e.g.
``rho`` for SFT alignment, are dropped so they don't force reruns), the upstream stage's
hash, ``vaccine_lib.__version__``, ``STAGE_FORMAT``, a sha256 of the source files the stage
runs (``ALIGN_SOURCES`` etc.; editing e.g. ``vaccine.py`` reruns alignment) and the
checksums of the processed data splits. Device and thread count are not part of it.

Training: ``transformers.Trainer`` for SFT, ``VaccineTrainer`` for Vaccine, the
``baselines`` trainers for EWC / KL; AdamW with weight decay, warmup ratio and cosine schedule
as configured; ``save_strategy="no"``, ``report_to="none"``, ``dataloader_num_workers=0``,
``logging_steps=1`` (the log history has every step's loss, grad norm, lr and, for Vaccine,
``vaccine/eps_norm``). Loss = token mean over all response tokens of the batch (HF default).

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
        lr, batch_size, grad_accum, max_length: AdamW learning rate, per-device batch,
            gradient accumulation steps, token limit.
        weight_decay, warmup_ratio, lr_scheduler: optimiser schedule (paper: 0.1, 0.1, cosine).
        lora_r, lora_alpha, lora_dropout: alignment adapter (paper: 8, 4, 0.1; the reference
            code silently changed alpha to 1 - we keep 4).
        dtype: weights dtype (``"float32"``, ``"bfloat16"``, ``"float16"``); part of the model identity.
        source: ``"offline"`` (embedded data) or ``"hub"`` (the paper's datasets); the fine-tuning
            and evaluation stages use the same source.
        seed: seeds python/numpy/torch, the Trainer and the alignment-set draw.
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
    grad_accum: int = 1
    max_length: int = 128
    weight_decay: float = 0.1
    warmup_ratio: float = 0.1
    lr_scheduler: str = "cosine"
    lora_r: int = 8
    lora_alpha: int = 4
    lora_dropout: float = 0.1
    dtype: str = "float32"
    source: str = "offline"
    seed: int = 42

    def validate(self) -> "AlignConfig":
        check_choice("method", self.method, ALIGN_METHODS)
        check_choice("perturbation", self.perturbation, PERTURBATIONS)
        check_range("rho", self.rho, 0, float("inf"))
        check_range("tau", self.tau, 1, 10**9)
        check_range("helpful_fraction", self.helpful_fraction, 0, 1)
        check_range("n_align", self.n_align, 1, 10**9)
        check_range("grad_accum", self.grad_accum, 1, 10**6)
        check_choice("dtype", self.dtype, ("float32", "bfloat16", "float16"))
        check_choice("source", self.source, ("offline", "hub"))
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
        epochs, max_steps, lr, batch_size, grad_accum, max_length, weight_decay, warmup_ratio,
            lr_scheduler: training (miniature: lr 5e-4 for 2 epochs; the paper uses 1e-5 for 20 epochs).
        lora: ``"double"`` (merge the alignment adapter, train a fresh one; paper default),
            ``"single"`` (keep training the alignment adapter), or ``None`` = the paper's choice
            per defense: ``"single"`` for EWC (its anchor w* is the aligned adapter), ``"double"``
            otherwise (and always for Non-Aligned, which has no alignment adapter).
        lora_r, lora_alpha, lora_dropout: the fresh fine-tuning adapter (Double-LoRA only).
        ewc_lambda: EWC penalty weight (see ``vaccine_lib.baselines.EWCConfig``; the miniature
            default 1e6 is not the paper's 1e9 - the product with the Fisher's scale matters).
        ewc_fisher_samples: alignment samples (batch size 1: per-sample empirical Fisher) used
            to estimate the Fisher.
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
    grad_accum: int = 1
    max_length: int = 128
    weight_decay: float = 0.1
    warmup_ratio: float = 0.1
    lr_scheduler: str = "cosine"
    lora: str | None = None
    lora_r: int = 8
    lora_alpha: int = 8
    lora_dropout: float = 0.1
    ewc_lambda: float = 1e6
    ewc_fisher_samples: int = 64
    kl_weight: float = 1e-3
    vlguard_m: int | None = None
    seed: int = 42
    drift_every: int = 0
    drift_samples: int = 16

    def validate(self) -> "FinetuneConfig":
        self.align.validate()
        check_choice("defense", self.defense, DEFENSES)
        if self.lora is not None:
            check_choice("lora", self.lora, LORA_MODES)
        check_range("grad_accum", self.grad_accum, 1, 10**6)
        check_range("p", self.p, 0, 1)
        check_range("n", self.n, 1, 10**9)
        check_range("ewc_lambda", self.ewc_lambda, 0, float("inf"))
        check_range("kl_weight", self.kl_weight, 0, float("inf"))
        if self.lora == "single" and self.align.method == "none":
            raise ConfigError("lora='single' needs an alignment adapter; with align.method='none' use lora='double'")
        if self.defense == "ewc" and self.align.method == "none":
            raise ConfigError("defense='ewc' needs an aligned model (align.method 'sft' or 'vaccine')")
        if self.defense == "kl" and self.lora == "single":
            raise ConfigError("defense='kl' uses the aligned model as the frozen reference = the model with its "
                              "fine-tuning adapter disabled, which needs lora='double' (or None)")
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
    cfg: Any = field(default=None, repr=False)  # the AlignConfig / FinetuneConfig (not stored on disk)


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


_DATA_VERSIONS: dict[str, str] = {}


def _data_version(source: str = "offline") -> str:
    """Hash of the processed splits' checksums (rebuilt data invalidates trained stages).

    Builds the offline splits first if they are missing, so the hash is the same before and
    after the first stage runs. Hub data is identified by its source name only.
    """
    if source == "hub":
        return "hub"
    if source not in _DATA_VERSIONS:
        from .data import build, default_data_dir, read_manifest

        manifest = read_manifest(default_data_dir()) or build()
        sums = {name: info.get("sha256") for name, info in sorted(manifest.get("splits", {}).items())}
        _DATA_VERSIONS[source] = hashlib.sha256(json.dumps(sums, sort_keys=True).encode()).hexdigest()[:16]
    return _DATA_VERSIONS[source]


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
            d.pop("ewc_fisher_samples")
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
        "data": _data_version(_source_of(cfg)), "config": _effective(cfg), "upstream": upstream, "extra": extra or {},
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _source_of(cfg) -> str:
    if isinstance(cfg, AlignConfig):
        return cfg.source
    if isinstance(cfg, FinetuneConfig):
        return cfg.align.source
    return "offline"


def align_key(cfg: AlignConfig) -> str:
    """Stage hash of an alignment config (stable across processes and machines)."""
    return _key("align", cfg.validate(), ALIGN_SOURCES)


def finetune_key(cfg: FinetuneConfig) -> str:
    """Stage hash of a fine-tuning config; embeds ``align_key(cfg.align)``."""
    return _key("finetune", cfg.validate(), FINETUNE_SOURCES, upstream=align_key(cfg.align))


def resolve_lora_mode(cfg: FinetuneConfig) -> str:
    """``cfg.lora``, or for ``None`` the paper's choice: Single-LoRA for EWC, Double-LoRA otherwise."""
    if cfg.lora is not None:
        return cfg.lora
    return "single" if cfg.defense == "ewc" and cfg.align.method != "none" else "double"


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


def _run_stage(path: Path, stage: str, key: str, write, collective: bool = False) -> StageResult:
    """Return the cached stage at ``path`` or run ``write(tmp) -> (config, metrics, log_history)``.

    Under a multi-process launch (``torchrun`` / ``accelerate launch``) see :func:`_run_stage_ranked`;
    ``collective=True`` marks a stage every rank must run together (training: DDP).
    """
    rank, world = _rank_world()
    if world > 1:
        return _run_stage_ranked(path, stage, key, write, rank, collective)
    return _run_stage_local(path, stage, key, write)


def _run_stage_local(path: Path, stage: str, key: str, write) -> StageResult:
    """One process: the cached stage, or ``write`` into a temporary folder renamed into place."""
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


# --------------------------------------------------------------------------- multi-process launches

#: how long a non-main rank waits for the main process to finish a stage (seconds)
STAGE_WAIT_S = 7 * 24 * 3600.0


def _process_group():
    """``torch.distributed`` if its default process group is initialised (never imports torch)."""
    import sys

    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist
    return None


def _rank_world() -> tuple[int, int]:
    """(rank, world size) of this process: the process group's, else ``RANK`` / ``WORLD_SIZE`` set by a
    launcher; ``(0, 1)`` in a single process."""
    import os

    dist = _process_group()
    if dist is not None:
        return dist.get_rank(), dist.get_world_size()
    world = int(os.environ.get("WORLD_SIZE") or 1)
    if world > 1 and os.environ.get("RANK"):
        return int(os.environ["RANK"]), world
    return 0, 1


def _main_decides(flag: bool) -> bool:
    """Rank 0's ``flag`` on every rank (broadcast once a process group is up), so all ranks take the same branch."""
    dist = _process_group()
    if dist is None:
        return flag
    box = [bool(flag)]
    dist.broadcast_object_list(box, src=0)
    return bool(box[0])


def _barrier() -> None:
    dist = _process_group()
    if dist is not None:
        dist.barrier()


def _run_stage_ranked(path: Path, stage: str, key: str, write, rank: int, collective: bool) -> StageResult:
    """A stage under a multi-process launch; only rank 0 ever writes or deletes under ``run_dir``.

    - a finished stage (``done.json``, rank 0's view) is read by every rank;
    - ``collective`` (training): every rank runs ``write`` (DDP needs all of them in the Trainer); rank 0
      writes the stage folder (atomically, as in one process), the others write into a private temporary
      folder that is deleted, then wait at a barrier;
    - otherwise (evaluation, drift) rank 0 alone runs it;
    - the other ranks read the stage only once its ``done.json`` exists: ``atomic_save_dir`` renames the
      complete folder into place, so no rank reads a half-written stage.
    """
    import tempfile

    if _main_decides(is_done(path)):
        return _read_result(path, stage, key)
    if rank == 0:
        res = _run_stage_local(path, stage, key, write)
        if collective:
            _barrier()
        return res
    if collective:
        with tempfile.TemporaryDirectory(prefix=f"vaccine-{stage}-rank{rank}-") as tmp:
            write(Path(tmp))
        _barrier()
    t0 = time.monotonic()
    while not is_done(path):
        if time.monotonic() - t0 > STAGE_WAIT_S:
            from .errors import VaccineError

            raise VaccineError(f"rank {rank}: the main process did not finish {path} within {STAGE_WAIT_S:.0f} s")
        time.sleep(0.5)
    res = _read_result(path, stage, key)
    res.cached = False
    return res


# --------------------------------------------------------------------------- stages (public API)

#: fixed probe set for alignment loss and drift: harmful questions with their safe (refusal)
#: answers, the same rows for every method: ``alignment_set(n, seed=PROBE_SEED, helpful_fraction=0)``
PROBE_SEED = 0
#: probe samples for the alignment loss stored in the align / finetune metrics
ALIGN_LOSS_SAMPLES = 32


def align(cfg: AlignConfig, run_dir) -> StageResult:
    """Alignment stage (cached). ``method="none"`` trains nothing and returns ``path=None``.

    Stores the alignment LoRA adapter under ``<path>/adapter``; ``metrics`` holds ``train_loss``
    (Trainer average), ``final_loss`` (last logged step), ``align_loss`` (clean loss of the
    aligned model on the fixed probe set, eval mode), ``train_seconds``, ``steps``, ``n_train``.
    """
    cfg.validate()
    key = align_key(cfg)
    if cfg.method == "none":
        return StageResult(path=None, config=_effective(cfg), metrics={}, log_history=[], cached=True,
                           key=key, stage="align", cfg=cfg)
    path = stage_dir(run_dir, "align", cfg)
    res = _run_stage(path, "align", key, lambda tmp: _train_align(cfg, tmp), collective=True)
    res.cfg = cfg
    return res


def finetune(cfg: FinetuneConfig, run_dir) -> StageResult:
    """User fine-tuning stage (cached); runs ``align(cfg.align)`` first if it is not cached.

    Stores the fine-tuning adapter under ``<path>/adapter`` (Double-LoRA: the fresh adapter on
    top of base + merged alignment adapter; Single-LoRA: the continued alignment adapter).
    ``metrics`` holds ``train_loss``, ``final_loss``, ``align_loss`` (probe set, after
    fine-tuning), ``train_seconds``, ``steps``, ``n_train``, ``lora``; with ``drift_every > 0``
    the log history has ``drift_sum_sq`` / ``drift_per_token`` / ``align_loss`` entries.
    """
    cfg.validate()
    key = finetune_key(cfg)
    path = stage_dir(run_dir, "finetune", cfg)
    if _main_decides(is_done(path)):
        res = _read_result(path, "finetune", key)
    else:
        upstream = align(cfg.align, run_dir)
        res = _run_stage(path, "finetune", key, lambda tmp: _train_finetune(cfg, upstream, tmp), collective=True)
    res.cfg = cfg
    return res


def load_stage_model(target: Target, run_dir, merge: bool = False, device: str | None = None):
    """(model, tokenizer) of a stage in eval mode, training it first if it is not cached.

    - ``AlignConfig`` (or its result): base + merged alignment adapter (plain model); the base
      model itself for ``method="none"``.
    - ``FinetuneConfig`` (or its result): Double-LoRA: base + merged alignment adapter + the
      fine-tuning adapter (a ``PeftModel``; ``model.disable_adapter()`` gives the aligned model);
      Single-LoRA: base + continued adapter. ``merge=True`` merges everything into a plain model.
    ``device``: ``None`` = cuda if available, else cpu.
    """
    from .lora import load_lora, merge_lora

    kind, cfg = _resolve(target)
    if kind == "align":
        res = align(cfg, run_dir)
        model, tok = _base_model(cfg)
        if res.path is not None:
            model = merge_lora(load_lora(model, res.path / "adapter"))
    else:
        fres = finetune(cfg, run_dir)
        model, tok = _base_model(cfg.align)
        if resolve_lora_mode(cfg) == "double":
            ares = align(cfg.align, run_dir)
            if ares.path is not None:
                model = merge_lora(load_lora(model, ares.path / "adapter"))
        model = load_lora(model, fres.path / "adapter")
        if merge:
            model = merge_lora(model)
    model.eval()
    model.to(_device(device))
    return model, tok


def evaluate(target: Target, eval_cfg: EvalConfig | None = None, run_dir=".", tasks: Sequence[str] | None = None) -> dict:
    """Harmful Score / refusal / label-only rates and fine-tune accuracy of a stage's model (cached).

    ``tasks`` defaults to the fine-tuning task (for a ``FinetuneConfig``) or none (for an
    ``AlignConfig``: only the Harmful Score). Results also go to
    ``vaccine_lib.evaluation.ResultsStore(run_dir)`` so ``collect_results(run_dir)`` tabulates
    them. Returns a flat dict: ``hs``, ``refusal_rate``, ``label_only_rate``, ``hs_n``,
    ``mean_harm_score``, ``fa`` / ``fa_n`` (first task), ``fa_<task>`` per task, ``cached``.
    """
    eval_cfg = eval_cfg or EvalConfig()
    kind, cfg = _resolve(target)
    if tasks is None:
        tasks = (cfg.task,) if kind == "finetune" else ()
    tasks = tuple(tasks)
    upstream = finetune_key(cfg) if kind == "finetune" else align_key(cfg)
    key = _key("eval", eval_cfg, EVAL_SOURCES, upstream=upstream, extra={"kind": kind, "tasks": list(tasks)})
    path = Path(run_dir) / "eval" / key

    def write(tmp: Path):
        return _run_eval(kind, cfg, eval_cfg, tasks, run_dir, tmp, key)

    res = _run_stage(path, "eval", key, write)
    return {**res.metrics, "cached": res.cached}


def drift(ft_cfg: FinetuneConfig, run_dir, n_samples: int = 50) -> dict:
    """Harmful embedding drift of the fine-tuned model vs its aligned model (vs the base model for
    Non-Aligned) on ``n_samples`` fixed probe samples (cached).

    Probe set: ``alignment_set(n_samples, seed=PROBE_SEED, helpful_fraction=0)`` (harmful
    questions + safe answers, identical for every method); all non-padding tokens count.
    Returns ``drift_sum_sq`` (the reference's summed squared L2 over layers and samples),
    ``drift_per_token`` (normalised, comparable across model sizes, see ``vaccine_lib.drift``),
    ``align_loss`` of the fine-tuned model, ``align_loss_before`` of the aligned model,
    ``n_tokens``, ``n_layers``, ``cached``.
    """
    ft_cfg.validate()
    key = _key("drift", ft_cfg, DRIFT_SOURCES, upstream=finetune_key(ft_cfg), extra={"n_samples": n_samples})
    path = Path(run_dir) / "drift" / key
    res = _run_stage(path, "drift", key, lambda tmp: _run_drift(ft_cfg, run_dir, n_samples))
    return {**res.metrics, "cached": res.cached}


def stage_embeddings(target: Target, run_dir, n_samples: int = 64, layer: int | str = -1,
                     response_only: bool = False, probe: AlignConfig | None = None):
    """Per-sample pooled hidden embeddings of a stage's model on the fixed probe set (t-SNE, Fig. 4).

    Returns a ``[n_samples, d]`` CPU tensor (``layer="concat"``: ``[n, L*d]``), see
    ``vaccine_lib.drift.pooled_embeddings``. The probe rows are the same for every stage (they
    depend only on ``probe.source`` and ``probe.max_length``; default: the stage's alignment config).
    Not cached (one forward pass over ``n_samples``).
    """
    from .drift import pooled_embeddings

    kind, cfg = _resolve(target)
    a = probe or (cfg if kind == "align" else cfg.align)
    model, tok = load_stage_model(cfg, run_dir, merge=True)
    return pooled_embeddings(model, tok, _probe_batches(a, tok, n_samples), layer=layer, response_only=response_only)


PAPER_METHODS = ("NA", "SFT", "EWC", "Vlguard", "KL", "Vaccine")


def paper_method(label: str, align_cfg: AlignConfig | None = None, **finetune_kwargs) -> FinetuneConfig:
    """The FinetuneConfig of one of the paper's Table 1 rows.

    ``NA`` = no alignment + SFT; ``SFT``/``EWC``/``Vlguard``/``KL`` = SFT alignment + that
    fine-tuning defense; ``Vaccine`` = Vaccine alignment + SFT. ``align_cfg`` supplies the shared
    alignment hyper-parameters (its ``method`` is overridden).
    """
    check_choice("method", label, PAPER_METHODS)
    base = align_cfg or AlignConfig()
    method = {"NA": "none", "Vaccine": "vaccine"}.get(label, "sft")
    defense = {"EWC": "ewc", "Vlguard": "vlguard", "KL": "kl"}.get(label, "sft")
    return FinetuneConfig(align=dataclasses.replace(base, method=method), defense=defense, **finetune_kwargs)


def method_label(cfg: Target) -> str:
    """Inverse of ``paper_method``: ``NA``, ``SFT``, ``EWC``, ``Vlguard``, ``KL``, ``Vaccine``
    (``Vaccine+EWC`` etc. for combinations)."""
    kind, cfg = _resolve(cfg)
    a = cfg if kind == "align" else cfg.align
    first = {"none": "NA", "sft": "SFT", "vaccine": "Vaccine"}[a.method]
    if kind == "align" or cfg.defense == "sft":
        return first
    second = {"ewc": "EWC", "vlguard": "Vlguard", "kl": "KL"}[cfg.defense]
    return second if first == "SFT" else f"{first}+{second}"


def describe(target: Target) -> dict:
    """Flat, human-readable config of a stage (the ``config`` of its ResultsStore record)."""
    kind, cfg = _resolve(target)
    a = cfg if kind == "align" else cfg.align
    out = {"method": method_label(cfg), "model": a.model, "align_method": a.method, "stage": kind,
           "align_key": align_key(a), "n_align": a.n_align, "seed": a.seed}
    if a.method == "vaccine":
        out.update(rho=a.rho, tau=a.tau, perturbation=a.perturbation)
    if kind == "finetune":
        out.update(defense=cfg.defense, task=cfg.task, n=cfg.n, p=cfg.p, lora=resolve_lora_mode(cfg),
                   ft_seed=cfg.seed, finetune_key=finetune_key(cfg), ft_lr=cfg.lr, ft_epochs=cfg.epochs)
        if cfg.defense == "ewc":
            out["ewc_lambda"] = cfg.ewc_lambda
        elif cfg.defense == "kl":
            out["kl_weight"] = cfg.kl_weight
        elif cfg.defense == "vlguard":
            out["vlguard_m"] = vlguard_m(cfg)
    else:
        out.update(defense="none", p=None, task=None)
    return out


# --------------------------------------------------------------------------- internals


def _resolve(target: Target) -> tuple[str, Any]:
    if isinstance(target, StageResult):
        if target.cfg is None:
            raise ConfigError("this StageResult carries no config; pass the AlignConfig / FinetuneConfig instead")
        target = target.cfg
    if isinstance(target, AlignConfig):
        return "align", target.validate()
    if isinstance(target, FinetuneConfig):
        return "finetune", target.validate()
    raise ConfigError(f"expected an AlignConfig, FinetuneConfig or StageResult, got {type(target).__name__}")


def _device(device: str | None = None) -> str:
    import torch

    if device:
        return device
    if not torch.cuda.is_available():
        return "cpu"
    import os

    local = os.environ.get("LOCAL_RANK")  # one GPU per process under a launcher
    return f"cuda:{int(local)}" if _rank_world()[1] > 1 and local not in (None, "", "-1") else "cuda"


def _base_model(a: AlignConfig):
    import torch

    from .models import load_model

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[a.dtype]
    return load_model(a.model, dtype=dtype)  # tiny random models: fixed seed 0 = the same base every time


def _training_args(cls, c, tmp: Path, **extra):
    """TrainingArguments (or a subclass) for a stage config ``c`` (AlignConfig or FinetuneConfig)."""
    return cls(
        output_dir=str(tmp / "trainer"), per_device_train_batch_size=c.batch_size,
        gradient_accumulation_steps=c.grad_accum, num_train_epochs=c.epochs, max_steps=c.max_steps,
        learning_rate=c.lr, weight_decay=c.weight_decay, warmup_steps=c.warmup_ratio,
        lr_scheduler_type=c.lr_scheduler, logging_steps=1, save_strategy="no", report_to="none",
        dataloader_num_workers=0, seed=c.seed, data_seed=c.seed, disable_tqdm=True, **extra)


def _probe_batches(a: AlignConfig, tok, n: int, batch_size: int = 8, max_length: int | None = None) -> list[dict]:
    """Fixed probe batches (harmful question -> safe answer) for alignment loss and drift."""
    from .data import SFTCollator, alignment_set, tokenize_sft

    kw = {} if a.source == "hub" else {"helpful_fraction": 0.0}
    rows = alignment_set(n, seed=PROBE_SEED, source=a.source, **kw)
    ds = tokenize_sft(rows, tok, max_length or a.max_length)
    collate = SFTCollator(tok)
    return [collate([ds[j] for j in range(i, min(i + batch_size, len(ds)))]) for i in range(0, len(ds), batch_size)]


def _quiet(trainer) -> None:
    """No per-step printing (the log history keeps every step); notebooks stay readable."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)


def _summary(trainer, out, seconds: float, n_train: int) -> tuple[dict, list]:
    history = list(trainer.state.log_history)
    losses = [e["loss"] for e in history if "loss" in e]
    metrics = {"train_loss": float(out.training_loss), "final_loss": losses[-1] if losses else None,
               "train_seconds": round(seconds, 3), "steps": int(trainer.state.global_step), "n_train": n_train,
               "seconds_per_step": round(seconds / max(trainer.state.global_step, 1), 4)}
    return metrics, history


def _train_align(cfg: AlignConfig, tmp: Path):
    import shutil

    from transformers import Trainer, TrainingArguments, set_seed

    from .data import SFTCollator, alignment_set, tokenize_sft
    from .drift import alignment_loss
    from .lora import add_lora, save_lora

    set_seed(cfg.seed)
    model, tok = _base_model(cfg)
    kw = {} if cfg.source == "hub" else {"helpful_fraction": cfg.helpful_fraction}
    rows = alignment_set(cfg.n_align, seed=cfg.seed, source=cfg.source, **kw)
    train = tokenize_sft(rows, tok, cfg.max_length)
    model = add_lora(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout)
    if cfg.method == "vaccine":
        from .vaccine import VaccineConfig, VaccineTrainer

        args = _training_args(VaccineConfig, cfg, tmp, rho=cfg.rho, tau=cfg.tau, perturbation=cfg.perturbation)
        trainer_cls = VaccineTrainer
    else:
        args, trainer_cls = _training_args(TrainingArguments, cfg, tmp), Trainer
    trainer = trainer_cls(model=model, args=args, train_dataset=train, data_collator=SFTCollator(tok))
    _quiet(trainer)
    t0 = time.perf_counter()
    out = trainer.train()
    metrics, history = _summary(trainer, out, time.perf_counter() - t0, len(train))
    save_lora(model, tmp / "adapter")
    metrics["align_loss"] = alignment_loss(model, _probe_batches(cfg, tok, ALIGN_LOSS_SAMPLES))
    shutil.rmtree(tmp / "trainer", ignore_errors=True)
    return {**_effective(cfg), "key": align_key(cfg)}, metrics, history


def _train_finetune(cfg: FinetuneConfig, upstream: StageResult, tmp: Path):
    import shutil

    from transformers import Trainer, TrainingArguments, set_seed

    from .data import SFTCollator, alignment_set, finetune_mix, tokenize_sft
    from .drift import DriftCallback, alignment_loss
    from .lora import add_lora, load_lora, merge_lora, save_lora

    a = cfg.align
    mode = resolve_lora_mode(cfg)
    set_seed(cfg.seed)
    model, tok = _base_model(a)
    if upstream.path is not None:
        if mode == "double":
            model = merge_lora(load_lora(model, upstream.path / "adapter"))
        else:
            model = load_lora(model, upstream.path / "adapter", trainable=True)
    rows = finetune_mix(cfg.task, cfg.n, cfg.p, seed=cfg.seed, source=a.source)
    align_kw = {} if a.source == "hub" else {"helpful_fraction": a.helpful_fraction}
    if cfg.defense == "vlguard":
        from .baselines import vlguard_mix

        m = vlguard_m(cfg)
        rows = vlguard_mix(rows, alignment_set(m, seed=a.seed, source=a.source, **align_kw), m, seed=cfg.seed)
    train = tokenize_sft(rows, tok, cfg.max_length)
    if mode == "double":
        model = add_lora(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout)
    callbacks = []
    if cfg.drift_every > 0:
        callbacks.append(DriftCallback(_probe_batches(a, tok, cfg.drift_samples), every=cfg.drift_every))
    collate = SFTCollator(tok)
    extra: dict = {}
    if cfg.defense == "ewc":
        from .baselines import EWCConfig, EWCTrainer, compute_fisher

        model.to(_device())
        fisher_rows = tokenize_sft(alignment_set(min(cfg.ewc_fisher_samples, a.n_align), seed=a.seed,
                                                 source=a.source, **align_kw), tok, a.max_length)
        fisher = compute_fisher(model, (collate([fisher_rows[i]]) for i in range(len(fisher_rows))))
        args, trainer_cls, extra = _training_args(EWCConfig, cfg, tmp, ewc_lambda=cfg.ewc_lambda), EWCTrainer, \
            {"fisher": fisher}
    elif cfg.defense == "kl":
        from .baselines import KLConfig, KLTrainer

        args, trainer_cls = _training_args(KLConfig, cfg, tmp, kl_weight=cfg.kl_weight), KLTrainer
    else:
        args, trainer_cls = _training_args(TrainingArguments, cfg, tmp), Trainer
    trainer = trainer_cls(model=model, args=args, train_dataset=train, data_collator=collate, callbacks=callbacks,
                          **extra)
    _quiet(trainer)
    t0 = time.perf_counter()
    out = trainer.train()
    metrics, history = _summary(trainer, out, time.perf_counter() - t0, len(train))
    save_lora(model, tmp / "adapter")
    metrics["align_loss"] = alignment_loss(model, _probe_batches(a, tok, ALIGN_LOSS_SAMPLES))
    metrics["lora"] = mode
    metrics["n_rows"] = len(rows)  # before tokenisation (rows too long for max_length are dropped)
    shutil.rmtree(tmp / "trainer", ignore_errors=True)
    config = {**_effective(cfg), "align": _effective(a), "key": finetune_key(cfg), "align_key": align_key(a)}
    return config, metrics, history


def _run_eval(kind: str, cfg, eval_cfg: EvalConfig, tasks, run_dir, tmp: Path, key: str):
    from .data import eval_items, harmful_eval_prompts
    from .evaluation import ResultsStore, finetune_accuracy, harmful_score
    from .judge import get_judge

    a = cfg if kind == "align" else cfg.align
    model, tok = load_stage_model(cfg, run_dir, merge=True)
    t0 = time.perf_counter()
    prompts = list(harmful_eval_prompts(eval_cfg.n_harmful, seed=eval_cfg.seed, source=a.source))
    hs = harmful_score(model, tok, prompts, get_judge(eval_cfg.judge), max_new_tokens=eval_cfg.max_new_tokens,
                       batch_size=eval_cfg.batch_size, progress=False)
    metrics = dict(hs.metrics())
    generations = [{"part": "harmful", **g} for g in hs.generations]
    for i, task in enumerate(tasks):
        items = list(eval_items(task, eval_cfg.n_task, seed=eval_cfg.seed, source=a.source))
        fa = finetune_accuracy(model, tok, task, items, batch_size=eval_cfg.batch_size, progress=False)
        if i == 0:
            metrics.update(fa.metrics())
            metrics["fa_task"] = task
        metrics[f"fa_{task}"] = fa.accuracy
        if fa.choice_accuracy is not None:
            metrics[f"fa_choice_{task}"] = fa.choice_accuracy
        generations += [{"part": task, **g} for g in fa.generations]
    metrics["eval_seconds"] = round(time.perf_counter() - t0, 3)
    config = {**describe(cfg), **{f"eval_{k}": v for k, v in dataclasses.asdict(eval_cfg).items()},
              "eval_tasks": list(tasks), "eval_key": key}
    ResultsStore(run_dir).write(config, metrics, generations)
    return config, metrics, []


def _run_drift(cfg: FinetuneConfig, run_dir, n_samples: int):
    from .drift import alignment_loss, model_drift

    model, tok = load_stage_model(cfg, run_dir)
    batches = _probe_batches(cfg.align, tok, n_samples)
    if resolve_lora_mode(cfg) == "double":  # the aligned model = the same network, adapter disabled
        stats = model_drift(model, None, None, batches, disable_adapter_for_a=True)
        with model.disable_adapter():
            before = alignment_loss(model, batches)
    else:
        aligned, _ = load_stage_model(cfg.align, run_dir)
        stats = model_drift(model, aligned, None, batches)
        before = alignment_loss(aligned, batches)
        del aligned
    metrics = {**stats, "align_loss": alignment_loss(model, batches), "align_loss_before": before,
               "n_samples": n_samples}
    return {**describe(cfg), "n_samples": n_samples}, metrics, []

"""Cached experiment stages: ``align`` -> ``finetune`` -> ``evaluate`` (+ ``drift``).

Every stage is a function of its stage config (``vaccine_lib.config``). Its output folder is named
by a **stage key**: a hash of the fields that change its result (``cfg.effective()``), the data
manifest's hash, ``STAGE_VERSION[stage]`` and the upstream stage's key. Source files are *not*
hashed: editing a docstring retrains nothing; a change that alters a stage's results must bump
its ``STAGE_VERSION`` entry (the reviewer's checklist item for such a change). So

- a rerun with the same config returns the stored result (``StageResult.cached = True``);
- a changed fine-tuning parameter reruns fine-tuning and evaluation, not alignment;
- an interrupted stage is never mistaken for a finished one: it is written into a ``.tmp-*`` folder
  (holding the owner's pid) that is renamed into place after ``done.json``; ``.tmp-*`` folders of dead
  processes are removed on the next run.
- ``done.json`` holds the provenance (git commit, dirty flag, library versions, hardware, seed, key).
- under ``torchrun`` / ``accelerate launch`` (a torch.distributed process group is initialised) every
  rank trains a stage together (DDP), rank 0 writes it, the others wait (with a timeout) and read it;
  evaluation and drift run on rank 0. Rank variables in the environment alone are ignored.

Layout under ``run_dir``::

    align/<model>-<method>-<key>/        adapter/, config.json, metrics.json, log_history.json, done.json
    finetune/<model>-<method>-<defense>-<task>-p<p>-<key>/   the same
    eval/<key>/                          config.json, metrics.json, generations.jsonl (git-ignored), done.json
    drift/<key>/                         config.json, metrics.json, done.json

Only LoRA adapters are stored: the aligned model is base + merged alignment adapter (Double-LoRA),
the fine-tuning adapter is loaded on top.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, Union

from .config import (
    AlignConfig, EvalConfig, FinetuneConfig, dtype_of, resolve_device, training_args,
)
from .errors import ConfigError, VaccineError

#: bump a stage's entry when a code change alters its results (its cached outputs are then retrained)
STAGE_VERSION = {"align": 2, "finetune": 1, "eval": 2, "drift": 1}
#: fixed probe set for alignment loss and drift: ``alignment_set(n, seed=PROBE_SEED, helpful_fraction=0)``
PROBE_SEED = 0
#: probe samples for the alignment loss stored in the align / finetune metrics
ALIGN_LOSS_SAMPLES = 32
#: how long a non-main rank waits for rank 0 to finish a stage (seconds; ``$VACCINE_STAGE_WAIT_S``)
STAGE_WAIT_S = float(os.environ.get("VACCINE_STAGE_WAIT_S", 6 * 3600))


@dataclass
class StageResult:
    """What a stage returns (also what it stored on disk)."""

    path: Path | None
    config: dict
    metrics: dict
    log_history: list = field(default_factory=list)
    cached: bool = False
    key: str = ""
    stage: str = ""
    cfg: Any = field(default=None, repr=False)


Target = Union[AlignConfig, FinetuneConfig, StageResult]


# --------------------------------------------------------------------------- keys

_DATA_VERSIONS: dict[str, str] = {}


def data_version(source: str = "offline") -> str:
    """Hash of the processed splits' checksums (builds the offline data first if missing); ``"hub"`` for Hub data."""
    if source == "hub":
        return "hub"
    if source not in _DATA_VERSIONS:
        from .data import build, default_data_dir, read_manifest

        manifest = read_manifest(default_data_dir()) or build()
        sums = {name: info.get("sha256") for name, info in sorted(manifest.get("splits", {}).items())}
        _DATA_VERSIONS[source] = hashlib.sha256(json.dumps(sums, sort_keys=True).encode()).hexdigest()[:16]
    return _DATA_VERSIONS[source]


def stage_key(stage: str, config: dict, source: str, upstream: str = "", extra: dict | None = None) -> str:
    """sha256 of (stage, STAGE_VERSION, the config fields that change the result, data version, upstream key)."""
    payload = {"stage": stage, "version": STAGE_VERSION[stage], "config": config, "data": data_version(source),
               "upstream": upstream, "extra": extra or {}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def align_key(cfg: AlignConfig) -> str:
    return stage_key("align", cfg.effective(), cfg.source)


def _need_align(cfg: FinetuneConfig) -> AlignConfig:
    if cfg.align is None:
        raise ConfigError("FinetuneConfig.align is None; a fine-tuning stage needs its alignment stage "
                          "(vaccine_lib.grids.finetune_config builds both from a profile)")
    return cfg.align


def finetune_key(cfg: FinetuneConfig) -> str:
    a = _need_align(cfg)
    return stage_key("finetune", cfg.effective(), a.source, upstream=align_key(a))


def eval_key(target: Target, eval_cfg: EvalConfig, tasks: Sequence[str]) -> str:
    kind, cfg = _resolve(target)
    a = cfg if kind == "align" else _need_align(cfg)
    upstream = finetune_key(cfg) if kind == "finetune" else align_key(cfg)
    return stage_key("eval", eval_cfg.effective(), a.source, upstream=upstream, extra={"kind": kind, "tasks": list(tasks)})


def drift_key(cfg: FinetuneConfig, n_samples: int) -> str:
    return stage_key("drift", {"n_samples": int(n_samples)}, _need_align(cfg).source, upstream=finetune_key(cfg))


def stage_dir(run_dir, stage: str, cfg) -> Path:
    """Folder of a stage (finished or not) under ``run_dir``."""
    run_dir = Path(run_dir)
    if stage == "align":
        return run_dir / "align" / f"{_slug(cfg.model)}-{cfg.method}-{align_key(cfg)}"
    if stage == "finetune":
        a = _need_align(cfg)
        return run_dir / "finetune" / f"{_slug(a.model)}-{a.method}-{cfg.defense}-{cfg.task}-p{cfg.p:g}-{finetune_key(cfg)}"
    raise ConfigError(f"unknown stage {stage!r}; allowed values: align, finetune")


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(s))[-40:]


def is_done(path) -> bool:
    """A stage counts as finished only if its ``done.json`` exists (written last)."""
    return (Path(path) / "done.json").is_file()


# --------------------------------------------------------------------------- stage folders


def _read_result(path: Path, stage: str, key: str) -> StageResult:
    def load(name, default):
        f = path / name
        return json.loads(f.read_text()) if f.is_file() else default

    return StageResult(path=path, config=load("config.json", {}), metrics=load("metrics.json", {}),
                       log_history=load("log_history.json", []), cached=True, key=key, stage=stage)


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1, sort_keys=True, default=str))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(parent: Path, max_age_s: float = 24 * 3600) -> list[Path]:
    """Remove ``.tmp-*`` stage folders under ``parent`` whose owner process is dead (or, without an
    owner file, older than ``max_age_s``). Returns what was removed."""
    removed = []
    if not Path(parent).is_dir():
        return removed
    for tmp in Path(parent).glob(".tmp-*"):
        if not tmp.is_dir():
            continue
        owner = tmp / "owner.json"
        try:
            info = json.loads(owner.read_text())
            dead = info.get("host") == os.uname().nodename and not _pid_alive(int(info["pid"]))
        except (OSError, ValueError, KeyError):
            dead = time.time() - tmp.stat().st_mtime > max_age_s
        if dead:
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    return removed


def clean_run_dir(run_dir) -> list[Path]:
    """:func:`clean_stale` over every stage folder of ``run_dir`` (train / reproduce call it at start)."""
    return [p for stage in STAGE_VERSION for p in clean_stale(Path(run_dir) / stage)]


def _run_stage_local(path: Path, stage: str, key: str, write, seed: int | None) -> StageResult:
    """One process: the cached stage, or ``write(tmp) -> (config, metrics, log_history)`` into a temporary
    folder renamed into place after ``done.json``."""
    from .models import atomic_save_dir
    from .provenance import provenance

    if is_done(path):
        return _read_result(path, stage, key)
    clean_stale(path.parent)
    if path.exists():  # left over from an interrupted run without done.json: redo it
        shutil.rmtree(path)

    def writer(tmp: Path) -> None:
        _write_json(tmp / "owner.json", {"pid": os.getpid(), "host": os.uname().nodename})
        config, metrics, log_history = write(tmp)
        _write_json(tmp / "config.json", config)
        _write_json(tmp / "metrics.json", metrics)
        _write_json(tmp / "log_history.json", log_history)
        (tmp / "owner.json").unlink()
        _write_json(tmp / "done.json", provenance(stage=stage, key=key, seed=seed))

    atomic_save_dir(path, writer)
    res = _read_result(path, stage, key)
    res.cached = False
    return res


def _run_stage(path: Path, stage: str, key: str, write, seed: int | None = None, collective: bool = False):
    """The cached stage at ``path`` or run it; see :func:`_run_stage_ranked` under a multi-process launch."""
    dist = _process_group()
    if dist is not None and dist.get_world_size() > 1:
        return _run_stage_ranked(dist, path, stage, key, write, seed, collective)
    with _single_process_env():
        return _run_stage_local(path, stage, key, write, seed)


#: launcher variables that transformers / accelerate would act on
_RANK_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK")


@contextlib.contextmanager
def _single_process_env():
    """Without an initialised process group, rank variables left in the environment (e.g. ``WORLD_SIZE=2 RANK=1``
    on a cluster pod) are ignored: they are hidden from transformers / accelerate while the stage runs."""
    stale = {k: os.environ[k] for k in _RANK_VARIABLES if k in os.environ}
    if stale and int(stale.get("WORLD_SIZE", "1") or 1) > 1:
        import warnings

        warnings.warn(f"ignoring {', '.join(f'{k}={v}' for k, v in stale.items())}: no torch.distributed process group "
                      "is initialised, so this process trains alone. Start with torchrun / accelerate launch "
                      "(python -m vaccine_lib.train) to train data parallel.", stacklevel=3)
    for k in stale:
        del os.environ[k]
    try:
        yield
    finally:
        os.environ.update(stale)


# --------------------------------------------------------------------------- multi-process launches


def _process_group():
    """``torch.distributed`` if its default process group is initialised (rank variables alone are not trusted)."""
    import sys

    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist
    return None


def _rank() -> int:
    dist = _process_group()
    return dist.get_rank() if dist is not None else 0


def _main_decides(flag: bool) -> bool:
    """Rank 0's ``flag`` on every rank, so all ranks take the same branch."""
    dist = _process_group()
    if dist is None:
        return flag
    box = [bool(flag)]
    dist.broadcast_object_list(box, src=0)
    return bool(box[0])


def wait_for(path: Path, what: str, timeout_s: float = STAGE_WAIT_S, poll_s: float = 0.5, say=print) -> None:
    """Wait until ``path/done.json`` exists, saying what it waits for every minute; VaccineError after ``timeout_s``."""
    t0 = last = time.monotonic()
    while not is_done(path):
        now = time.monotonic()
        if now - t0 > timeout_s:
            raise VaccineError(f"rank {_rank()}: waited {timeout_s:.0f} s for {what} ({path}) and it never finished; "
                               "is rank 0 still alive? Fix: check rank 0's log, or raise $VACCINE_STAGE_WAIT_S.")
        if now - last > 60:
            say(f"rank {_rank()}: waiting for {what} ({now - t0:.0f} s of at most {timeout_s:.0f} s)", flush=True)
            last = now
        time.sleep(poll_s)


def _run_stage_ranked(dist, path: Path, stage: str, key: str, write, seed, collective: bool) -> StageResult:
    """Rank 0 alone writes under ``run_dir``; with ``collective`` (training) every rank runs ``write`` (DDP)
    and the others throw their copy away; the other ranks then read the finished stage."""
    import tempfile

    if _main_decides(is_done(path)):
        return _read_result(path, stage, key)
    rank = dist.get_rank()
    if rank == 0:
        res = _run_stage_local(path, stage, key, write, seed)
        if collective:
            dist.barrier()
        return res
    if collective:
        with tempfile.TemporaryDirectory(prefix=f"vaccine-{stage}-rank{rank}-") as tmp:
            write(Path(tmp))
        dist.barrier()
    wait_for(path, f"rank 0 to write the {stage} stage {key}")
    res = _read_result(path, stage, key)
    res.cached = False
    return res


# --------------------------------------------------------------------------- stages (public API)


def align(cfg: AlignConfig, run_dir) -> StageResult:
    """Alignment stage (cached). ``method="none"`` trains nothing and returns ``path=None``.

    Stores the alignment adapter under ``<path>/adapter``; ``metrics``: ``train_loss``, ``final_loss``,
    ``align_loss`` (probe set, eval mode), ``train_seconds``, ``steps``, ``n_train``.
    """
    key = align_key(cfg)
    if cfg.method == "none":
        return StageResult(path=None, config=cfg.effective(), metrics={}, cached=True, key=key, stage="align", cfg=cfg)
    path = stage_dir(run_dir, "align", cfg)
    res = _run_stage(path, "align", key, lambda tmp: _train_align(cfg, tmp, Path(run_dir)), seed=cfg.seed,
                     collective=True)
    res.cfg = cfg
    return res


def finetune(cfg: FinetuneConfig, run_dir) -> StageResult:
    """User fine-tuning stage (cached); runs ``align(cfg.align)`` first if it is not cached.

    Double-LoRA: a fresh adapter on base + merged alignment adapter; Single-LoRA: the continued alignment
    adapter. ``metrics``: ``train_loss``, ``final_loss``, ``align_loss``, ``train_seconds``, ``steps``,
    ``n_train``, ``lora``; with ``drift_every > 0`` the log history has drift entries.
    """
    key = finetune_key(cfg)
    path = stage_dir(run_dir, "finetune", cfg)
    if _main_decides(is_done(path)):
        res = _read_result(path, "finetune", key)
    else:
        upstream = align(cfg.align, run_dir)
        res = _run_stage(path, "finetune", key, lambda tmp: _train_finetune(cfg, upstream, tmp), seed=cfg.seed,
                         collective=True)
    res.cfg = cfg
    return res


def evaluate(target: Target, eval_cfg: EvalConfig, run_dir, tasks: Sequence[str] | None = None) -> dict:
    """Harmful Score / refusal / label-only rates and fine-tune accuracy of a stage's model (cached).

    ``tasks`` defaults to the fine-tuning task (``FinetuneConfig``) or none (``AlignConfig``: HS only).
    The generations are stored in the stage folder (``generations.jsonl``, git-ignored; may hold harmful
    text); ``vaccine_lib.evaluation.ResultsStore(run_dir)`` reads every evaluation back. Returns a flat dict: ``hs``, ``refusal_rate``, ``label_only_rate``, ``hs_n``, ``fa`` / ``fa_n``
    (first task), ``fa_<task>`` per task, ``eval_key``, ``cached``.
    """
    kind, cfg = _resolve(target)
    tasks = tuple(tasks if tasks is not None else ((cfg.task,) if kind == "finetune" else ()))
    key = eval_key(cfg, eval_cfg, tasks)
    path = Path(run_dir) / "eval" / key
    res = _run_stage(path, "eval", key, lambda tmp: _run_eval(kind, cfg, eval_cfg, tasks, run_dir, tmp, key),
                     seed=eval_cfg.seed)
    return {**res.metrics, "eval_key": key, "cached": res.cached}


def generations(target: Target, eval_cfg: EvalConfig, run_dir, tasks: Sequence[str] | None = None) -> list[dict]:
    """The stored answers of an evaluation (may be harmful text: show only through ``show_generations``)."""
    kind, cfg = _resolve(target)
    tasks = tuple(tasks if tasks is not None else ((cfg.task,) if kind == "finetune" else ()))
    path = Path(run_dir) / "eval" / eval_key(cfg, eval_cfg, tasks) / "generations.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def drift(cfg: FinetuneConfig, run_dir, n_samples: int = 50) -> dict:
    """Harmful embedding drift of the fine-tuned model vs its aligned model (the base model for Non-Aligned)
    on ``n_samples`` fixed probe samples (cached): ``drift_sum_sq``, ``drift_per_token``, ``align_loss``,
    ``align_loss_before``, ``n_tokens``, ``n_layers``, ``seconds`` (the stage's own time), ``cached``."""
    key = drift_key(cfg, n_samples)
    path = Path(run_dir) / "drift" / key
    res = _run_stage(path, "drift", key, lambda tmp: _run_drift(cfg, run_dir, n_samples), seed=cfg.seed)
    return {**res.metrics, "cached": res.cached}


def load_stage_model(target: Target, run_dir, merge: bool = False):
    """(model, tokenizer) of a stage in eval mode on the stage's device, training it first if not cached.

    ``AlignConfig``: base + merged alignment adapter (the base model for ``method="none"``).
    ``FinetuneConfig``: Double-LoRA: base + merged alignment adapter + fine-tuning adapter (a ``PeftModel``;
    ``model.disable_adapter()`` gives the aligned model); Single-LoRA: base + continued adapter.
    ``merge=True`` merges everything into a plain model.
    """
    from .lora import load_lora, merge_lora

    kind, cfg = _resolve(target)
    a = cfg if kind == "align" else cfg.align
    model, tok = _base_model(a)
    if kind == "align":
        res = align(cfg, run_dir)
        if res.path is not None:
            model = merge_lora(load_lora(model, res.path / "adapter"))
    else:
        fres = finetune(cfg, run_dir)
        if cfg.lora_mode() == "double":
            ares = align(a, run_dir)
            if ares.path is not None:
                model = merge_lora(load_lora(model, ares.path / "adapter"))
        model = load_lora(model, fres.path / "adapter")
        if merge:
            model = merge_lora(model)
    model.eval()
    model.to(_device(cfg.device))
    return model, tok


def method_label(target: Target) -> str:
    """``NA``, ``SFT``, ``EWC``, ``Vlguard``, ``KL``, ``Vaccine`` (``Vaccine+EWC`` etc. for combinations)."""
    kind, cfg = _resolve(target)
    a = cfg if kind == "align" else cfg.align
    first = {"none": "NA", "sft": "SFT", "vaccine": "Vaccine"}[a.method]
    if kind == "align" or cfg.defense == "sft":
        return first
    second = {"ewc": "EWC", "vlguard": "Vlguard", "kl": "KL"}[cfg.defense]
    return second if first == "SFT" else f"{first}+{second}"


def describe(target: Target) -> dict:
    """Flat, human-readable summary of a stage config (stored in evaluation and drift records)."""
    kind, cfg = _resolve(target)
    a = cfg if kind == "align" else cfg.align
    out = {"method": method_label(cfg), "model": a.model, "align_method": a.method, "stage": kind,
           "align_key": align_key(a), "n_align": a.n, "seed": a.seed}
    if a.method == "vaccine":
        out.update(rho=a.rho, tau=a.tau, perturbation=a.perturbation)
    if kind == "finetune":
        out.update(defense=cfg.defense, task=cfg.task, n=cfg.n, p=cfg.p, lora=cfg.lora_mode(), ft_seed=cfg.seed,
                   finetune_key=finetune_key(cfg))
    return out


# --------------------------------------------------------------------------- internals


def _resolve(target: Target) -> tuple[str, Any]:
    if isinstance(target, StageResult):
        if target.cfg is None:
            raise ConfigError("this StageResult carries no config; pass the AlignConfig / FinetuneConfig instead")
        target = target.cfg
    if isinstance(target, AlignConfig):
        return "align", target
    if isinstance(target, FinetuneConfig):
        _need_align(target)
        return "finetune", target
    raise ConfigError(f"expected an AlignConfig, FinetuneConfig or StageResult, got {type(target).__name__}")


def _device(device: str = "auto") -> str:
    """The stage config's device (``auto``: CUDA when present); one GPU per process under a launcher."""
    resolved = resolve_device(device)
    dist = _process_group()
    local = os.environ.get("LOCAL_RANK")
    if resolved == "cuda" and dist is not None and local not in (None, "", "-1"):
        return f"cuda:{int(local)}"
    return resolved


def _base_model(a: AlignConfig):
    from .models import load_model

    return load_model(a.model, dtype=dtype_of(a.dtype))  # tiny random models: fixed seed 0 = the same base


def build_callbacks(cfg, tok, a: AlignConfig) -> list:
    """The Trainer callbacks of a training stage (the one place they are built): the divergence guard
    (a non-finite loss, gradient, perturbation or weight fails the stage, so it is never cached) and, for
    fine-tuning with ``drift_every > 0``, the drift log."""
    from .drift import DriftCallback
    from .guards import FiniteGuard

    stage = "finetune" if isinstance(cfg, FinetuneConfig) else "align"
    callbacks = [FiniteGuard(stage=stage)]
    if isinstance(cfg, FinetuneConfig) and cfg.drift_every > 0:
        callbacks.append(DriftCallback(_probe_batches(a, tok, cfg.drift_samples), every=cfg.drift_every))
    return callbacks


def _probe_batches(a: AlignConfig, tok, n: int, batch_size: int = 8) -> list[dict]:
    """Fixed probe batches (harmful question -> safe answer) for alignment loss and drift."""
    from .data import SFTCollator, alignment_set, tokenize_sft

    kw = {} if a.source == "hub" else {"helpful_fraction": 0.0}
    rows = alignment_set(n, seed=PROBE_SEED, source=a.source, **kw)
    ds = tokenize_sft(rows, tok, a.max_length)
    collate = SFTCollator(tok)
    return [collate([ds[j] for j in range(i, min(i + batch_size, len(ds)))]) for i in range(0, len(ds), batch_size)]


def _quiet(trainer) -> None:
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


def alignment_rows(cfg: AlignConfig, model, tok, run_dir):
    """The alignment set of ``cfg``: the data build's (Hub: BeaverTails; offline: refusals + templated
    puzzle answers) or, with ``helpful="selfdistill"`` offline, refusals + the base model's own answers
    (cached under ``run_dir/selfdistill``, shared by every alignment of the same model)."""
    from .data import alignment_set

    if cfg.source == "hub":
        return alignment_set(cfg.n, seed=cfg.seed, source="hub")
    if cfg.helpful == "selfdistill":
        from datasets import Dataset

        from .data.selfdistill import selfdistill_alignment_rows

        return Dataset.from_list(selfdistill_alignment_rows(model, tok, cfg.n, cfg.helpful_fraction, cfg.seed,
                                                            Path(run_dir) / "selfdistill", cfg.model))
    return alignment_set(cfg.n, seed=cfg.seed, helpful_fraction=cfg.helpful_fraction)


def _train_align(cfg: AlignConfig, tmp: Path, run_dir: Path):
    from transformers import Trainer, set_seed

    from .data import SFTCollator, tokenize_sft
    from .drift import alignment_loss
    from .guards import check_finite_weights
    from .lora import add_lora, save_lora

    set_seed(cfg.seed)
    model, tok = _base_model(cfg)
    train = tokenize_sft(alignment_rows(cfg, model, tok, run_dir), tok, cfg.max_length)
    set_seed(cfg.seed)
    model = add_lora(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, target_modules=cfg.target_modules())
    if cfg.method == "vaccine":
        from .vaccine import VaccineConfig, VaccineTrainer

        args = training_args(cfg, tmp / "trainer", VaccineConfig, rho=cfg.rho, tau=cfg.tau,
                             perturbation=cfg.perturbation)
        trainer_cls = VaccineTrainer
    else:
        args, trainer_cls = training_args(cfg, tmp / "trainer"), Trainer
    trainer = trainer_cls(model=model, args=args, train_dataset=train, data_collator=SFTCollator(tok),
                          callbacks=build_callbacks(cfg, tok, cfg))
    _quiet(trainer)
    t0 = time.perf_counter()
    out = trainer.train()
    metrics, history = _summary(trainer, out, time.perf_counter() - t0, len(train))
    check_finite_weights(model, stage="align", args=args)  # before anything is saved
    save_lora(model, tmp / "adapter")
    metrics["align_loss"] = alignment_loss(model, _probe_batches(cfg, tok, ALIGN_LOSS_SAMPLES))
    shutil.rmtree(tmp / "trainer", ignore_errors=True)
    return {**cfg.effective(), "key": align_key(cfg)}, metrics, history


def _train_finetune(cfg: FinetuneConfig, upstream: StageResult, tmp: Path):
    from transformers import Trainer, set_seed

    from .data import SFTCollator, alignment_set, finetune_mix, tokenize_sft
    from .drift import alignment_loss
    from .guards import check_finite_weights
    from .lora import add_lora, load_lora, merge_lora, save_lora

    a = cfg.align
    mode = cfg.lora_mode()
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

        rows = vlguard_mix(rows, alignment_set(cfg.vlguard_m, seed=a.seed, source=a.source, **align_kw),
                           cfg.vlguard_m, seed=cfg.seed)
    train = tokenize_sft(rows, tok, cfg.max_length)
    if mode == "double":
        model = add_lora(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, target_modules=cfg.target_modules())
    collate = SFTCollator(tok)
    extra: dict = {}
    if cfg.defense == "ewc":
        from .baselines import EWCConfig, EWCTrainer, compute_fisher

        model.to(_device(cfg.device))
        fisher_rows = tokenize_sft(alignment_set(min(cfg.ewc_fisher_samples, a.n), seed=a.seed, source=a.source,
                                                 **align_kw), tok, a.max_length)
        fisher = compute_fisher(model, (collate([fisher_rows[i]]) for i in range(len(fisher_rows))))
        args, trainer_cls = training_args(cfg, tmp / "trainer", EWCConfig, ewc_lambda=cfg.ewc_lambda), EWCTrainer
        extra = {"fisher": fisher}
    elif cfg.defense == "kl":
        from .baselines import KLConfig, KLTrainer

        args, trainer_cls = training_args(cfg, tmp / "trainer", KLConfig, kl_weight=cfg.kl_weight), KLTrainer
    else:
        args, trainer_cls = training_args(cfg, tmp / "trainer"), Trainer
    trainer = trainer_cls(model=model, args=args, train_dataset=train, data_collator=collate,
                          callbacks=build_callbacks(cfg, tok, a), **extra)
    _quiet(trainer)
    t0 = time.perf_counter()
    out = trainer.train()
    metrics, history = _summary(trainer, out, time.perf_counter() - t0, len(train))
    check_finite_weights(model, stage="finetune", args=args)  # before anything is saved
    save_lora(model, tmp / "adapter")
    metrics["align_loss"] = alignment_loss(model, _probe_batches(a, tok, ALIGN_LOSS_SAMPLES))
    metrics["lora"] = mode
    metrics["n_rows"] = len(rows)  # before tokenisation (rows too long for max_length are dropped)
    shutil.rmtree(tmp / "trainer", ignore_errors=True)
    config = {**cfg.effective(), "align": a.effective(), "key": finetune_key(cfg), "align_key": align_key(a)}
    return config, metrics, history


def _run_eval(kind: str, cfg, eval_cfg: EvalConfig, tasks, run_dir, tmp: Path, key: str):
    from .data import eval_items, harmful_eval_prompts
    from .evaluation import finetune_accuracy, harmful_score
    from .evaluation.results import write_generations
    from .judge import get_judge

    a = cfg if kind == "align" else cfg.align
    model, tok = load_stage_model(cfg, run_dir, merge=True)
    t0 = time.perf_counter()
    prompts = list(harmful_eval_prompts(eval_cfg.n_harmful, seed=eval_cfg.seed, source=a.source))
    hs = harmful_score(model, tok, prompts, get_judge(eval_cfg.judge), max_new_tokens=eval_cfg.max_new_tokens,
                       batch_size=eval_cfg.batch_size, progress=False)
    metrics = dict(hs.metrics())
    gens = [{"part": "harmful", **g} for g in hs.generations]
    for i, task in enumerate(tasks):
        items = list(eval_items(task, eval_cfg.n_task, seed=eval_cfg.seed, source=a.source))
        fa = finetune_accuracy(model, tok, task, items, max_new_tokens=eval_cfg.task_max_new_tokens,
                               batch_size=eval_cfg.batch_size, progress=False, choice=eval_cfg.fa_choice)
        if i == 0:
            metrics.update(fa.metrics())
            metrics["fa_task"] = task
            metrics["fa_top_answer_share"] = top_answer_share([g["answer"] for g in fa.generations])
        metrics[f"fa_{task}"] = fa.accuracy
        if fa.choice_accuracy is not None:
            metrics[f"fa_choice_{task}"] = fa.choice_accuracy
        gens += [{"part": task, **g} for g in fa.generations]
    if eval_cfg.n_benign:
        benign = benign_refusals(model, tok, eval_cfg)
        metrics.update(benign["metrics"])
        gens += benign["generations"]
    metrics["eval_seconds"] = round(time.perf_counter() - t0, 3)
    write_generations(tmp, gens)
    config = {**describe(cfg), **{f"eval_{k}": v for k, v in eval_cfg.effective().items()},
              "eval_tasks": list(tasks), "eval_key": key}
    return config, metrics, []


def top_answer_share(answers: Sequence[str]) -> float:
    """Share (%) of the most frequent answer (first 8 characters, lower case): a model that answers one
    label for (almost) every item has not learned the task, whatever its accuracy (regime study, R2)."""
    keys = [a.strip().lower()[:8] for a in answers]
    return round(100.0 * max(keys.count(k) for k in set(keys)) / len(keys), 2) if keys else 0.0


def benign_refusals(model, tok, eval_cfg: EvalConfig) -> dict:
    """The benign refusal rate (%): refused or empty answers to ``eval_cfg.n_benign`` held-out benign
    instructions (``data.selfdistill.benign_eval_rows``), overall and per family; over-refusal, reported
    beside HS like XSTest's."""
    from .data import alpaca_prompt
    from .data.selfdistill import benign_eval_rows
    from .evaluation import generate
    from .judge import is_refusal

    rows = benign_eval_rows(eval_cfg.n_benign)
    answers = generate(model, tok, [alpaca_prompt(r["instruction"], r.get("input") or "") for r in rows],
                       max_new_tokens=eval_cfg.benign_max_new_tokens, batch_size=eval_cfg.batch_size, progress=False)
    refused = [bool(is_refusal(a) or not a.strip()) for a in answers]
    metrics = {"benign_refusal": round(100.0 * sum(refused) / len(refused), 2), "n_benign": len(rows)}
    for fam in sorted({r["family"] for r in rows}):
        mine = [x for r, x in zip(rows, refused) if r["family"] == fam]
        metrics[f"benign_refusal_{fam}"] = round(100.0 * sum(mine) / len(mine), 2)
    gens = [{"part": "benign", "family": r["family"], "question": r["instruction"], "input": r.get("input") or "",
             "answer": a, "refusal": x} for r, a, x in zip(rows, answers, refused)]
    return {"metrics": metrics, "generations": gens}


def _run_drift(cfg: FinetuneConfig, run_dir, n_samples: int):
    from .drift import alignment_loss, model_drift

    t0 = time.perf_counter()
    model, tok = load_stage_model(cfg, run_dir)
    batches = _probe_batches(cfg.align, tok, n_samples)
    if cfg.lora_mode() == "double":  # the aligned model = the same network with the adapter disabled
        stats = model_drift(model, None, None, batches, disable_adapter_for_a=True)
        with model.disable_adapter():
            before = alignment_loss(model, batches)
    else:
        aligned, _ = load_stage_model(cfg.align, run_dir)
        stats = model_drift(model, aligned, None, batches)
        before = alignment_loss(aligned, batches)
        del aligned
    metrics = {**stats, "align_loss": alignment_loss(model, batches), "align_loss_before": before,
               "n_samples": n_samples, "seconds": round(time.perf_counter() - t0, 3)}
    return {**describe(cfg), "n_samples": n_samples}, metrics, []

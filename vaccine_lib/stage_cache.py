"""The stage cache: keys (hash of ``cfg.effective()``, the data manifest, ``STAGE_VERSION[stage]`` and the upstream
key; source files are not hashed), one folder rule (:func:`stage_dir`), atomic writes, verification before use,
rank safety (rank 0 alone verifies and writes). The contract: docs/ARCHITECTURE.md, "Stage cache"."""

import contextlib
import functools
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .atomic import DamagedFolder, IntegrityWarning, atomic_save_dir, file_list, verify_folder
from .config import AlignConfig, EvalConfig, FinetuneConfig
from .data import build, default_data_dir, read_manifest
from .errors import ConfigError, VaccineError
from .judge import judge_recipe
from .provenance import provenance

#: bump a stage's entry when a code change alters its results (its cached outputs are then retrained)
STAGE_VERSION = {"align": 2, "finetune": 1, "eval": 2, "drift": 1}
#: how long a non-main rank waits for rank 0 to finish a stage (seconds; ``$VACCINE_STAGE_WAIT_S``)
STAGE_WAIT_S = float(os.environ.get("VACCINE_STAGE_WAIT_S", 6 * 3600))
#: the files every stage writes besides its own
RESULT_FILES = ("config.json", "metrics.json", "log_history.json")
#: launcher variables that transformers / accelerate would act on
_RANK_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK")


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


@functools.cache
def data_version(source: str = "offline") -> str:
    """Hash of the processed splits' checksums (builds the offline data first if missing); ``"hub"`` for Hub data."""
    if source == "hub":
        return "hub"
    manifest = read_manifest(default_data_dir()) or build()
    sums = {name: info.get("sha256") for name, info in sorted(manifest.get("splits", {}).items())}
    return hashlib.sha256(json.dumps(sums, sort_keys=True).encode()).hexdigest()[:16]


def stage_key(stage: str, config: dict, source: str, upstream: str = "", extra: dict | None = None) -> str:
    """sha256 of (stage, STAGE_VERSION, the config fields that change the result, data version, upstream key)."""
    payload = {"stage": stage, "version": STAGE_VERSION[stage], "config": config, "data": data_version(source),
               "upstream": upstream, "extra": extra or {}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def align_key(cfg: AlignConfig) -> str:
    return stage_key("align", cfg.effective(), cfg.source)


def need_align(cfg: FinetuneConfig) -> AlignConfig:
    if cfg.align is None:
        raise ConfigError("FinetuneConfig.align is None; a fine-tuning stage needs its alignment stage "
                          "(vaccine_lib.registry.finetune_config builds both from a profile)")
    return cfg.align


def finetune_key(cfg: FinetuneConfig) -> str:
    return stage_key("finetune", cfg.effective(), need_align(cfg).source, upstream=align_key(cfg.align))


def eval_key(cfg, eval_cfg: EvalConfig, tasks) -> str:
    """Key of the evaluation of an ``AlignConfig`` / ``FinetuneConfig``'s model on ``tasks``."""
    kind = "finetune" if isinstance(cfg, FinetuneConfig) else "align"
    a, upstream = (need_align(cfg), finetune_key(cfg)) if kind == "finetune" else (cfg, align_key(cfg))
    return stage_key("eval", eval_cfg.effective(), a.source, upstream=upstream,
                     extra={"kind": kind, "tasks": list(tasks), **judge_recipe(eval_cfg.judge)})


def drift_key(cfg: FinetuneConfig, n_samples: int) -> str:
    return stage_key("drift", {"n_samples": int(n_samples)}, need_align(cfg).source, upstream=finetune_key(cfg))


def stage_dir(run_dir, stage: str, cfg) -> Path:
    """Folder of a stage under ``run_dir`` (the one stage-path rule); ``cfg``: the stage config of an align /
    finetune stage, the key of an eval / drift stage."""
    run_dir = Path(run_dir)
    if stage in ("eval", "drift"):
        if not isinstance(cfg, str):
            raise ConfigError(f"stage_dir(run_dir, {stage!r}, key): pass the {stage} stage's key, not a "
                              f"{type(cfg).__name__}")
        return run_dir / stage / cfg
    if stage == "align":
        return run_dir / "align" / f"{_slug(cfg.model)}-{cfg.method}-{align_key(cfg)}"
    if stage == "finetune":
        a = need_align(cfg)
        name = f"{_slug(a.model)}-{a.method}-{cfg.defense}-{cfg.task}-p{cfg.p:g}-{finetune_key(cfg)}"
        return run_dir / "finetune" / name
    raise ConfigError(f"unknown stage {stage!r}; allowed values: align, finetune, eval, drift")


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(s))[-40:]


def is_done(path) -> bool:  # done.json is written last; cached() verifies the folder
    return (Path(path) / "done.json").is_file()


def read_result(path: Path, stage: str, key: str, cached: bool = True) -> StageResult:
    """The stored :class:`StageResult`; :class:`DamagedFolder` for a file that does not parse."""
    loaded = []
    for name in RESULT_FILES:
        try:
            loaded.append(json.loads((path / name).read_text()))
        except (OSError, ValueError) as exc:
            raise DamagedFolder(f"{name} is unreadable ({type(exc).__name__}: {exc})") from None
    return StageResult(path, *loaded, cached=cached, key=key, stage=stage)


def cached(path, stage: str, key: str, required=(), deep: bool = False, check=None) -> StageResult | None:
    """The finished, verified stage at ``path`` (every rank gets rank 0's answer), or None if it must be run.
    A damaged one is removed, saying which file failed; ``check(result)`` may raise :class:`DamagedFolder`."""
    path, res = Path(path), None
    if _rank() == 0 and is_done(path):
        try:
            verify_folder(path, (*RESULT_FILES, *required), deep)
            res = read_result(path, stage, key)
            if check is not None:
                check(res)
        except DamagedFolder as exc:
            res = None
            warnings.warn(f"the cached {stage} stage {key} ({path}) cannot be used: {exc}; redoing the stage",
                          IntegrityWarning, stacklevel=3)
            trash = path.with_name(f".tmp-{path.name}-damaged-{os.getpid()}")
            with contextlib.suppress(FileNotFoundError):  # another worker may have moved it first
                os.replace(path, trash)  # one rename: no rank or worker sees a half-deleted stage
            shutil.rmtree(trash, ignore_errors=True)
    found, dist = [res is not None], _process_group()
    if dist is not None:  # rank 0's answer on every rank, so that all ranks take the same branch
        dist.broadcast_object_list(found, src=0)
    return (res or read_result(path, stage, key)) if found[0] else None


def run(path, stage: str, key: str, write, seed: int | None = None, collective: bool = False) -> StageResult:
    """Run a stage: ``write(tmp) -> (config, metrics, log_history)``. Under torch.distributed rank 0 writes it, the
    other ranks wait for it (with ``collective`` they run ``write`` too, into a throwaway folder)."""
    path, dist = Path(path), _process_group()
    if dist is None or dist.get_world_size() == 1:
        with _single_process_env():
            return _write(path, stage, key, write, seed)
    rank = dist.get_rank()
    if rank == 0:
        res = _write(path, stage, key, write, seed)
    elif collective:
        with tempfile.TemporaryDirectory(prefix=f"vaccine-{stage}-rank{rank}-") as tmp:
            write(Path(tmp))
    if collective:
        dist.barrier()
    if rank == 0:
        return res
    wait_for(path, f"rank 0 to write the {stage} stage {key}")
    return read_result(path, stage, key, cached=False)


def run_cached(path, stage: str, key: str, write, seed: int | None = None, collective: bool = False,
               required=(), deep: bool = False, check=None) -> StageResult:
    """The cached stage at ``path`` (:func:`cached`) or run it (:func:`run`)."""
    return cached(path, stage, key, required, deep, check) or run(path, stage, key, write, seed, collective)


def _write(path: Path, stage: str, key: str, write, seed: int | None) -> StageResult:
    """One process: ``write`` into a temporary folder renamed into place after ``done.json``."""
    clean_stale(path.parent)
    if path.exists() and not is_done(path):  # left over from an interrupted run without done.json: redo it
        shutil.rmtree(path)

    def writer(tmp: Path) -> None:
        (tmp / "owner.json").write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename}))
        for name, obj in zip(RESULT_FILES, write(tmp)):
            (tmp / name).write_text(json.dumps(obj, indent=1, sort_keys=True, default=str))
        (tmp / "owner.json").unlink()
        (tmp / "done.json").write_text(json.dumps(provenance(stage=stage, key=key, seed=seed, files=file_list(tmp)),
                                                  indent=1, sort_keys=True, default=str))

    atomic_save_dir(path, writer)
    return read_result(path, stage, key, cached=False)


def clean_stale(parent: Path, max_age_s: float = 24 * 3600) -> list[Path]:
    """Remove (and return) the ``.tmp-*`` stage folders under ``parent`` whose owner process is dead (without an
    owner file: older than ``max_age_s``)."""
    removed = []
    for tmp in (t for t in Path(parent).glob(".tmp-*") if t.is_dir()):
        try:
            info = json.loads((tmp / "owner.json").read_text())
            dead = info.get("host") == os.uname().nodename and not _pid_alive(int(info["pid"]))
        except (OSError, ValueError, KeyError):
            dead = time.time() - tmp.stat().st_mtime > max_age_s
        if dead:
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _single_process_env():
    """Without an initialised process group, rank variables left in the environment (e.g. ``WORLD_SIZE=2 RANK=1``
    on a cluster pod) are ignored: they are hidden from transformers / accelerate while the stage runs."""
    stale = {k: os.environ[k] for k in _RANK_VARIABLES if k in os.environ}
    if stale and int(stale.get("WORLD_SIZE", "1") or 1) > 1:
        warnings.warn(f"ignoring {', '.join(f'{k}={v}' for k, v in stale.items())}: no torch.distributed process group "
                      "is initialised, so this process trains alone. Start with torchrun / accelerate launch "
                      "(python -m vaccine_lib.runner train) to train data parallel.", stacklevel=4)
    for k in stale:
        del os.environ[k]
    try:
        yield
    finally:
        os.environ.update(stale)


def _process_group():
    """``torch.distributed`` if its default process group is initialised (rank variables alone are not trusted)."""
    dist = sys.modules.get("torch.distributed")
    return dist if dist is not None and dist.is_available() and dist.is_initialized() else None


def _rank() -> int:
    dist = _process_group()
    return dist.get_rank() if dist is not None else 0


def wait_for(path: Path, what: str, timeout_s: float = STAGE_WAIT_S, poll_s: float = 0.5) -> None:
    """Wait until ``path/done.json`` exists, saying what it waits for every minute; VaccineError after ``timeout_s``."""
    t0 = last = time.monotonic()
    while not is_done(path):
        now = time.monotonic()
        if now - t0 > timeout_s:
            raise VaccineError(f"rank {_rank()}: waited {timeout_s:.0f} s for {what} ({path}) and it never finished; "
                               "is rank 0 still alive? Fix: check rank 0's log, or raise $VACCINE_STAGE_WAIT_S.")
        if now - last > 60:
            print(f"rank {_rank()}: waiting for {what} ({now - t0:.0f} s of at most {timeout_s:.0f} s)", flush=True)
            last = now
        time.sleep(poll_s)


"""Train every stage a profile's notebooks need: ``python -m vaccine_lib.train --profile P``.

The notebooks read trained stages from the on-disk cache (``runs/<profile>/``, see
``vaccine_lib.pipeline``), so the expensive part of a reproduction can run first, data parallel
on several GPUs, and the notebooks afterwards in one process find every model cached and only
evaluate and plot::

    accelerate launch --config_file configs/accelerate/ddp_gpu.yaml -m vaccine_lib.train --profile paper
    make reproduce PROFILE=paper

This collects the distinct alignment and fine-tuning configurations of the chosen notebooks'
experiment points (``vaccine_lib.experiments``: the same configs the notebooks build, deduplicated
by stage hash), prints the plan (what is cached, what will be trained) and trains them in order
through ``pipeline.align`` / ``pipeline.finetune``. Evaluation, drift and the plots are left to the
notebooks. It also runs in one process (``python -m vaccine_lib.train --profile default``), and with
``torchrun``. Under a launcher every rank trains (DDP), rank 0 writes each stage, the others wait and
read it (``pipeline._run_stage_ranked``). Each process trains with the profile's per-device batch
size, so the global batch is ``processes x batch_size x grad_accum``; the stage hash does not
include the number of processes.

Examples::

    python -m vaccine_lib.train --profile smoke --dry-run
    python -m vaccine_lib.train --profile default --notebooks 01,03
    torchrun --nproc_per_node 2 -m vaccine_lib.train --profile smoke --notebooks 02 --run-dir /tmp/runs
    python -m vaccine_lib.train --profile smoke --override finetune.ps=[0.0] --override align.n=8
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Sequence

from .errors import ConfigError
from .profiles import PROFILE_NAMES, Profile, default_run_dir, get_profile

NOTEBOOKS = ("01", "02", "03", "04", "05")
#: alignment methods notebook 02 trains and evaluates before any fine-tuning (``experiments.run_aligned``)
ALIGNED_METHODS = ("sft", "vaccine")
#: how long the ranks of a launch wait for each other in a collective (the main process builds data first)
PROCESS_GROUP_TIMEOUT = timedelta(hours=2)


@dataclass
class Stage:
    """One stage of the plan."""

    kind: str  # "align" or "finetune"
    cfg: Any  # pipeline.AlignConfig / pipeline.FinetuneConfig
    key: str  # stage hash
    path: Path  # stage folder under run_dir
    label: str
    cached: bool


def notebook_points(P: Profile, notebook: str) -> list:
    """Fine-tuned models a notebook trains: ``experiments.notebook_points``, plus the Table 1 grid that
    notebook 04 re-runs beside the paper's numbers (cached when 03 ran first)."""
    from . import experiments as ex

    points = list(ex.notebook_points(P, notebook))
    if notebook == "04":
        points += ex.table1_points(P)
    return points


def collect_configs(P: Profile, notebooks: Sequence[str] = NOTEBOOKS) -> tuple[list, list]:
    """Distinct (alignment configs, fine-tuning configs) the notebooks need, in first-use order.

    Deduplicated by ``pipeline.align_key`` / ``pipeline.finetune_key``; the untrained
    ``method="none"`` alignment (Non-Aligned) is left out.
    """
    from . import experiments as ex
    from . import pipeline as pl

    aligns: dict[str, Any] = {}
    finetunes: dict[str, Any] = {}

    def add_align(a) -> None:
        if a.method != "none":
            aligns.setdefault(pl.align_key(a), a)

    for nb in notebooks:
        if nb == "02":
            for seed in P.seeds:
                for method in ALIGNED_METHODS:
                    add_align(ex.align_config(P, method, seed=seed))
        for point in notebook_points(P, nb):
            ft = ex.finetune_config(P, point)
            add_align(ft.align)
            finetunes.setdefault(pl.finetune_key(ft), ft)
    return list(aligns.values()), list(finetunes.values())


def _label(P: Profile, cfg) -> str:
    from . import pipeline as pl

    d = pl.describe(cfg)
    parts = [d["method"]]
    if d["stage"] == "finetune":
        parts += [d["task"], f"p={d['p']:g}", f"n={d['n']}", f"{d['lora']}-LoRA"]
    if "rho" in d:
        parts.append(f"rho={d['rho']:g}")
        if d["perturbation"] != "gradient":
            parts.append(d["perturbation"])
        if d["tau"] != 1:
            parts.append(f"tau={d['tau']}")
    if d["stage"] == "finetune" and cfg.drift_every > 0:
        parts.append("+drift log")
    if len(P.seeds) > 1:
        parts.append(f"seed={d['seed']}")
    return " ".join(parts)


def plan(P: Profile, notebooks: Sequence[str] = NOTEBOOKS, run_dir=None) -> list[Stage]:
    """Every stage to train for ``notebooks`` (alignments first), with its cache status under ``run_dir``."""
    from . import pipeline as pl

    run_dir = Path(run_dir or default_run_dir(P.name))
    aligns, finetunes = collect_configs(P, notebooks)
    stages = []
    for kind, cfgs, key_of in (("align", aligns, pl.align_key), ("finetune", finetunes, pl.finetune_key)):
        for cfg in cfgs:
            path = pl.stage_dir(run_dir, kind, cfg)
            stages.append(Stage(kind, cfg, key_of(cfg), path, _label(P, cfg), pl.is_done(path)))
    return stages


def format_plan(stages: Sequence[Stage], P: Profile, notebooks: Sequence[str], run_dir) -> str:
    n_align = sum(s.kind == "align" for s in stages)
    n_cached = sum(s.cached for s in stages)
    lines = [f"train: profile {P.name!r}, notebooks {','.join(notebooks)} -> {run_dir}",
             f"plan: {n_align} alignment + {len(stages) - n_align} fine-tuning stages; "
             f"{n_cached} cached, {len(stages) - n_cached} to train"]
    width = max((len(s.label) for s in stages), default=0)
    for s in stages:
        lines.append(f"  {s.kind:<8}  {'cached' if s.cached else 'train ':<6}  {s.label:<{width}}  {s.key}")
    return "\n".join(lines)


def parse_overrides(items: Sequence[str] | None) -> dict:
    """``["finetune.ps=[0.0, 0.5]", "align__n=8", "seed=1"]`` -> ``get_profile`` keyword overrides
    (values parsed as YAML)."""
    import yaml

    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip().replace(".", "__")
        if not sep or not key:
            raise ConfigError(f"--override {item!r}: expected key=value, e.g. finetune.ps=[0.0,0.1] or align.n=64")
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--override {item!r}: value is not valid YAML ({exc})") from exc
    return out


def parse_notebooks(text: str | None) -> list[str]:
    if not text:
        return list(NOTEBOOKS)
    wanted = [w.strip().zfill(2)[:2] for w in text.split(",") if w.strip()]
    bad = [w for w in wanted if w not in NOTEBOOKS]
    if bad or not wanted:
        raise ConfigError(f"--notebooks: unknown notebook(s) {', '.join(bad) or text!r}; "
                          f"allowed values: {', '.join(NOTEBOOKS)}")
    return [nb for nb in NOTEBOOKS if nb in wanted]


def init_distributed():
    """Under ``torchrun`` / ``accelerate launch`` (``WORLD_SIZE`` > 1): initialise the process group the
    Trainer will use (``accelerate.PartialState``; CPU-only machines use gloo) and return the state;
    ``None`` in a single process."""
    if int(os.environ.get("WORLD_SIZE") or 1) <= 1:
        return None
    import torch
    from accelerate import PartialState

    if not torch.cuda.is_available():
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")  # the Trainer's DDP on CPU (gloo)
    cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    return PartialState(cpu=cpu, timeout=PROCESS_GROUP_TIMEOUT)


def train(P: Profile, notebooks: Sequence[str] = NOTEBOOKS, run_dir=None, dry_run: bool = False,
          log=print) -> list[Stage]:
    """Print the plan and train every stage not cached yet (``dry_run``: only the plan). Returns the plan."""
    from contextlib import nullcontext

    from . import pipeline as pl

    run_dir = Path(run_dir or default_run_dir(P.name))
    state = None if dry_run else init_distributed()
    main = state.is_main_process if state is not None else int(os.environ.get("RANK") or 0) == 0
    say = log if main else (lambda *a, **k: None)
    with state.main_process_first() if state is not None else nullcontext():  # rank 0 builds missing data first
        stages = plan(P, notebooks, run_dir)
    say(format_plan(stages, P, notebooks, run_dir))
    if state is not None:
        say(f"data parallel: {state.num_processes} processes ({state.distributed_type}); global batch = "
            f"{state.num_processes} x align {P.align.batch_size} / fine-tune {P.finetune.batch_size} per process "
            f"(x grad_accum); the stage hash does not include the number of processes")
    if dry_run:
        return stages
    if P.threads and state is None:
        import torch

        torch.set_num_threads(P.threads)
    t_all, trained = time.perf_counter(), 0
    for i, s in enumerate(stages, 1):
        t0 = time.perf_counter()
        res = pl.align(s.cfg, run_dir) if s.kind == "align" else pl.finetune(s.cfg, run_dir)
        trained += not res.cached
        say(f"[{i}/{len(stages)}] {s.kind} {s.label}: "
            f"{'cached' if res.cached else f'trained in {time.perf_counter() - t0:.1f} s'}", flush=True)
    say(f"train: {len(stages)} stages ({trained} trained, {len(stages) - trained} cached) in "
        f"{time.perf_counter() - t_all:.0f} s under {run_dir}", flush=True)
    return stages


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vaccine_lib.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="default",
                        help=f"one of {', '.join(PROFILE_NAMES)} or a profile YAML path (default: default)")
    parser.add_argument("--notebooks", default=None, help="comma-separated notebook numbers, e.g. 01,03 (default: all)")
    parser.add_argument("--dry-run", action="store_true", help="only print the plan")
    parser.add_argument("--run-dir", default=None, help="stage cache (default: runs/<profile>, what the notebooks use)")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="profile override, repeatable: section.field=value (YAML value), e.g. finetune.ps=[0.0]")
    args = parser.parse_args(argv)
    try:
        notebooks = parse_notebooks(args.notebooks)
        overrides = parse_overrides(args.override)
        P = get_profile(args.profile, **overrides)
    except ConfigError as exc:
        parser.error(str(exc))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if P.data_source != "hub":
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from .experiments import quiet

    quiet()
    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(P.name)
    train(P, notebooks, run_dir, dry_run=args.dry_run)
    if not args.dry_run and int(os.environ.get("RANK") or 0) == 0:
        hint = f"make reproduce PROFILE={args.profile}"
        if overrides or args.run_dir:
            hint += " (the notebooks find these stages only with the same overrides and run_dir)"
        print(f"next: {hint}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

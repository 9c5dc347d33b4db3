"""Cached experiment stages: ``align`` -> ``finetune`` -> ``evaluate`` (+ ``drift``), each a function of its
stage config stored under ``run_dir`` by its key (a changed fine-tuning parameter reruns fine-tuning and
evaluation, not alignment). Keys, folders, verification, ranks: ``stage_cache``."""

import math
import time
from pathlib import Path
from typing import Any, Sequence, Union

from . import stage_cache as cache
from . import stage_training as training
from .atomic import DamagedFolder
from .config import METHODS, AlignConfig, EvalConfig, FinetuneConfig
from .data import alpaca_prompt, eval_items, harmful_eval_prompts
from .data.jsonl import read_jsonl
from .data.splits import benign_eval_rows
from .drift import alignment_loss, model_drift
from .errors import ConfigError, VaccineError
from .evaluation import finetune_accuracy, generate, harmful_score
from .evaluation.results import write_generations
from .hardware import resolve_autocast
from .judge import get_judge, is_refusal
from .lora import load_lora, merge_lora
from .stage_cache import (STAGE_VERSION, StageResult, align_key, clean_stale, drift_key, eval_key,  # noqa: F401
                          finetune_key, is_done, stage_dir, wait_for)
from .stage_training import probe_batches, trainer_setup, training_args  # noqa: F401

ADAPTER_FILES = ("adapter/adapter_config.json", "adapter/adapter_model.safetensors")

Target = Union[AlignConfig, FinetuneConfig, StageResult]


class UnusableResultError(VaccineError):
    """An evaluation whose answers are mostly empty or degenerate, or whose metrics are not finite."""


def clean_run_dir(run_dir) -> list[Path]:
    """:func:`clean_stale` over every stage folder of ``run_dir`` (train / reproduce call it at start)."""
    return [p for stage in (*STAGE_VERSION, "selfdistill") for p in clean_stale(Path(run_dir) / stage)]


def align(cfg: AlignConfig, run_dir, deep: bool = False) -> StageResult:
    """Alignment stage (cached; ``method="none"`` trains nothing, ``path=None``): the adapter under
    ``<path>/adapter``. ``deep``: hash-check every stored file, not only the JSON ones (before an adapter is loaded)."""
    key = align_key(cfg)
    if cfg.method == "none":
        return StageResult(path=None, config=cfg.effective(), metrics={}, cached=True, key=key, stage="align", cfg=cfg)
    res = cache.run_cached(stage_dir(run_dir, "align", cfg), "align", key,
                           lambda tmp: training.train_align(cfg, tmp, Path(run_dir)), seed=cfg.seed, collective=True,
                           required=ADAPTER_FILES, deep=deep)
    res.cfg = cfg
    return res


def finetune(cfg: FinetuneConfig, run_dir, deep: bool = False) -> StageResult:
    """User fine-tuning stage (cached; runs ``align(cfg.align)`` first if needed). Double-LoRA: a fresh adapter on
    base + merged alignment adapter; Single-LoRA: the continued alignment adapter. ``deep``: as in align."""
    key, path = finetune_key(cfg), stage_dir(run_dir, "finetune", cfg)
    res = cache.cached(path, "finetune", key, required=ADAPTER_FILES, deep=deep)
    if res is None:
        upstream = align(cfg.align, run_dir, deep=True)
        res = cache.run(path, "finetune", key, lambda tmp: training.train_finetune(cfg, upstream, tmp), seed=cfg.seed,
                        collective=True)
    res.cfg = cfg
    return res


def evaluate(target: Target, eval_cfg: EvalConfig, run_dir, tasks: Sequence[str] | None = None) -> dict:
    """HS / refusal / label-only rates and fine-tune accuracy of a stage's model (cached), a flat dict (+ ``eval_key``,
    ``cached``); ``tasks``: default the fine-tuning task (none for an ``AlignConfig``). The answers go to the
    git-ignored ``generations.jsonl``. :class:`UnusableResultError` for a broken model's answers."""
    res = _evaluate(target, eval_cfg, run_dir, tasks)
    return {**res.metrics, "eval_key": res.key, "cached": res.cached}


def _evaluate(target: Target, eval_cfg: EvalConfig, run_dir, tasks=None, stored: bool = False) -> StageResult | None:
    """The evaluation stage; ``stored``: only a finished one (None if it has not run), every file hash-checked."""
    kind, cfg, _ = _resolve(target)
    tasks = tuple(tasks if tasks is not None else ((cfg.task,) if kind == "finetune" else ()))
    key = eval_key(cfg, eval_cfg, tasks)
    if stored and not is_done(stage_dir(run_dir, "eval", key)):
        return None

    def check(res):  # a result stored before evaluations were checked
        problem = _unusable(res.metrics)
        if problem:
            raise DamagedFolder(f"metrics.json: {problem}")

    return cache.run_cached(stage_dir(run_dir, "eval", key), "eval", key,
                            lambda tmp: _run_eval(kind, cfg, eval_cfg, tasks, run_dir, tmp, key), seed=eval_cfg.seed,
                            required=("generations.jsonl",), deep=stored, check=check)


def generations(target: Target, eval_cfg: EvalConfig, run_dir, tasks: Sequence[str] | None = None) -> list[dict]:
    """The stored answers of a finished evaluation, verified (``[]`` if it has not run; may be harmful text:
    show only through ``show_generations``)."""
    res = _evaluate(target, eval_cfg, run_dir, tasks, stored=True)
    return [] if res is None else read_jsonl(res.path / "generations.jsonl")


def drift(cfg: FinetuneConfig, run_dir, n_samples: int = 50) -> dict:
    """Harmful embedding drift of the fine-tuned model vs its aligned model (the base model for Non-Aligned)
    on ``n_samples`` fixed probe samples, and the alignment loss before / after (cached)."""
    key = drift_key(cfg, n_samples)
    res = cache.run_cached(stage_dir(run_dir, "drift", key), "drift", key,
                           lambda tmp: _run_drift(cfg, run_dir, n_samples), seed=cfg.seed)
    return {**res.metrics, "cached": res.cached}


def load_stage_model(target: Target, run_dir, merge: bool = False):
    """(model, tokenizer) of a stage in eval mode on its device, trained first if not cached. Double-LoRA: base +
    merged alignment adapter + fine-tuning adapter (``disable_adapter()`` gives the aligned model); Single-LoRA:
    base + continued adapter. ``merge=True``: one plain model."""
    kind, cfg, a = _resolve(target)
    model, tok = training.base_model(a)
    fres = finetune(cfg, run_dir, deep=True) if kind == "finetune" else None
    if kind == "align" or cfg.lora_mode() == "double":
        ares = align(a, run_dir, deep=True)
        if ares.path is not None:
            model = merge_lora(load_lora(model, ares.path / "adapter"))
    if fres is not None:
        model = load_lora(model, fres.path / "adapter")
        model = merge_lora(model) if merge else model
    model.eval()
    model.to(training.device_of(cfg.device))
    return model, tok


def method_label(target: Target) -> str:
    """The ``config.METHODS`` label of a stage (``Vaccine+EWC`` etc. for combinations outside the table)."""
    kind, cfg, a = _resolve(target)
    labels = {(m.align, m.defense): m.label for m in METHODS.values()}
    first = labels[(a.method, "sft")]
    if kind == "align" or cfg.defense == "sft":
        return first
    second = labels[("sft", cfg.defense)]
    return second if a.method == "sft" else f"{first}+{second}"


def describe_target(target: Target) -> dict:
    """Flat, human-readable summary of a stage config (stored in evaluation and drift records)."""
    kind, cfg, a = _resolve(target)
    out = {"method": method_label(cfg), "model": a.model, "align_method": a.method, "stage": kind,
           "align_key": align_key(a), "n_align": a.n, "seed": a.seed}
    if a.method == "vaccine":
        out.update(rho=a.rho, tau=a.tau, perturbation=a.perturbation)
    if kind == "finetune":
        out.update(defense=cfg.defense, task=cfg.task, n=cfg.n, p=cfg.p, lora=cfg.lora_mode(), ft_seed=cfg.seed,
                   finetune_key=finetune_key(cfg))
    return out


def _resolve(target: Target) -> tuple[str, Any, AlignConfig]:  # (kind, config, its alignment config)
    if isinstance(target, StageResult):
        if target.cfg is None:
            raise ConfigError("this StageResult carries no config; pass the AlignConfig / FinetuneConfig instead")
        target = target.cfg
    if isinstance(target, AlignConfig):
        return "align", target, target
    if isinstance(target, FinetuneConfig):
        return "finetune", target, cache.need_align(target)
    raise ConfigError(f"expected an AlignConfig, FinetuneConfig or StageResult, got {type(target).__name__}")


def _unusable(metrics: dict) -> str | None:
    """Why an evaluation's metrics are no result (mostly empty / degenerate answers, a non-finite value), or None."""
    if metrics.get("degenerate"):
        return str(metrics["degenerate"])
    values = [(k, v) for k, v in metrics.items() if k != "per_category"]
    values += [(f"per_category.{c}.{k}", v) for c, d in metrics.get("per_category", {}).items() for k, v in d.items()]
    bad = [k for k, v in values if isinstance(v, float) and not math.isfinite(v)]
    return f"non-finite metrics {', '.join(bad)}" if bad else None


def _check_result(kind: str, cfg, key: str, metrics: dict, hs) -> None:
    problem = _unusable(metrics)
    if problem:
        raise UnusableResultError(
            f"evaluation {key} of {method_label(cfg)} ({kind} stage "
            f"{finetune_key(cfg) if kind == 'finetune' else align_key(cfg)}) is not a result: {problem}; first "
            f"answers {[g['answer'][:40] for g in hs.generations[:3]]}. The stage is not cached. Fix: inspect that "
            "model (a diverged training or a damaged adapter: delete its stage folder to retrain it).")


def _run_eval(kind: str, cfg, eval_cfg: EvalConfig, tasks, run_dir, tmp: Path, key: str):
    a = cfg if kind == "align" else cfg.align
    model, tok = load_stage_model(cfg, run_dir, merge=True)
    t0 = time.perf_counter()
    ac = resolve_autocast(eval_cfg.autocast, model.device.type)
    prompts = list(harmful_eval_prompts(eval_cfg.n_harmful, seed=eval_cfg.seed, source=a.source))
    hs = harmful_score(model, tok, prompts, get_judge(eval_cfg.judge), max_new_tokens=eval_cfg.max_new_tokens,
                       batch_size=eval_cfg.batch_size, progress=False, autocast=ac)
    _check_result(kind, cfg, key, hs.metrics(), hs)  # before the task answers: a broken model stops here
    metrics = dict(hs.metrics())
    gens = [{"part": "harmful", **g} for g in hs.generations]
    for i, task in enumerate(tasks):
        items = list(eval_items(task, eval_cfg.n_task, seed=eval_cfg.seed, source=a.source))
        fa = finetune_accuracy(model, tok, task, items, max_new_tokens=eval_cfg.task_max_new_tokens,
                               batch_size=eval_cfg.batch_size, progress=False, choice=eval_cfg.fa_choice,
                               autocast=ac)
        if i == 0:
            metrics.update(fa.metrics(), fa_task=task,
                           fa_top_answer_share=top_answer_share([g["answer"] for g in fa.generations]))
        metrics[f"fa_{task}"] = fa.accuracy
        if fa.choice_accuracy is not None:
            metrics[f"fa_choice_{task}"] = fa.choice_accuracy
        gens += [{"part": task, **g} for g in fa.generations]
    if eval_cfg.n_benign:
        benign = benign_refusals(model, tok, eval_cfg, ac)
        metrics.update(benign["metrics"])
        gens += benign["generations"]
    _check_result(kind, cfg, key, metrics, hs)
    metrics["eval_seconds"] = round(time.perf_counter() - t0, 3)
    metrics["generation_dtype"] = ac or "fp32"
    write_generations(tmp, gens)
    config = {**describe_target(cfg), **{f"eval_{k}": v for k, v in eval_cfg.effective().items()},
              "eval_tasks": list(tasks), "eval_key": key}
    return config, metrics, []


def top_answer_share(answers: Sequence[str]) -> float:
    """Share (%) of the most frequent answer (first 8 characters, lower case): a model answering one label for
    (almost) every item has not learned the task, whatever its accuracy (regime study, R2)."""
    keys = [a.strip().lower()[:8] for a in answers]
    return round(100.0 * max(keys.count(k) for k in set(keys)) / len(keys), 2) if keys else 0.0


def benign_refusals(model, tok, eval_cfg: EvalConfig, autocast: str | None = None) -> dict:
    """Over-refusal beside HS (like XSTest): the % of refused or empty answers to ``eval_cfg.n_benign`` held-out
    benign instructions (``benign_eval_rows``), overall and per family."""
    rows = benign_eval_rows(eval_cfg.n_benign)
    answers = generate(model, tok, [alpaca_prompt(r["instruction"], r.get("input") or "") for r in rows],
                       max_new_tokens=eval_cfg.benign_max_new_tokens, batch_size=eval_cfg.batch_size, progress=False,
                       autocast=autocast)
    refused = [bool(is_refusal(a) or not a.strip()) for a in answers]
    metrics = {"benign_refusal": round(100.0 * sum(refused) / len(refused), 2), "n_benign": len(rows)}
    for fam in sorted({r["family"] for r in rows}):
        mine = [x for r, x in zip(rows, refused) if r["family"] == fam]
        metrics[f"benign_refusal_{fam}"] = round(100.0 * sum(mine) / len(mine), 2)
    gens = [{"part": "benign", "family": r["family"], "question": r["instruction"], "input": r.get("input") or "",
             "answer": a, "refusal": x} for r, a, x in zip(rows, answers, refused)]
    return {"metrics": metrics, "generations": gens}


def _run_drift(cfg: FinetuneConfig, run_dir, n_samples: int):
    t0 = time.perf_counter()
    model, tok = load_stage_model(cfg, run_dir)
    batches = probe_batches(cfg.align, tok, n_samples)
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
    return {**describe_target(cfg), "n_samples": n_samples}, metrics, []

"""The training side of the stages: the one map from a stage config to the Trainer and its arguments, the
alignment and fine-tuning loops (only LoRA adapters are stored), the self-distillation stage (the base model's
own answers)."""

import json
import os
import random
import shutil
import time
from pathlib import Path

from datasets import Dataset
from transformers import Trainer, TrainingArguments, set_seed
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from . import stage_cache as cache
from .baselines import EWCConfig, EWCTrainer, KLConfig, KLTrainer, compute_fisher, vlguard_mix
from .config import AlignConfig, FinetuneConfig, TrainConfig, dtype_of, resolve_device
from .data import SFTCollator, alignment_set, alpaca_prompt, finetune_mix, tokenize_sft
from .data.splits import SELFDISTILL_MARGIN, SELFDISTILL_TOKENS, selfdistill_prompts
from .drift import DriftCallback, alignment_loss
from .errors import ConfigError
from .evaluation import generate
from .guards import FiniteGuard, check_finite_weights
from .hardware import resolve_autocast
from .hooks import eval_mode
from .judge import is_refusal
from .lora import add_lora, load_lora, merge_lora
from .losses import AnswerOnlyLoss
from .models import load_model
from .vaccine import VaccineConfig, VaccineTrainer

#: fixed probe set for alignment loss and drift: ``alignment_set(n, seed=PROBE_SEED, helpful_fraction=0)``
PROBE_SEED = 0
#: probe samples for the alignment loss stored in the align / finetune metrics
ALIGN_LOSS_SAMPLES = 32


def training_args(cfg: TrainConfig, output_dir, cls=None, **extra):
    """The ``TrainingArguments`` (or subclass ``cls``) of a stage config: AdamW, a warm-up of ``warmup_ratio`` of
    the steps (transformers 5 takes a ratio as ``warmup_steps`` < 1), a log entry per step, no checkpoints."""
    return (cls or TrainingArguments)(
        output_dir=str(output_dir), per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, num_train_epochs=cfg.epochs, max_steps=cfg.max_steps,
        learning_rate=cfg.lr, weight_decay=cfg.weight_decay, warmup_steps=float(cfg.warmup_ratio),
        lr_scheduler_type=cfg.lr_scheduler, logging_steps=1, save_strategy="no", report_to="none",
        dataloader_num_workers=0, seed=cfg.seed, data_seed=cfg.seed, disable_tqdm=True,
        use_cpu=cfg.device == "cpu", bf16=resolve_autocast(cfg.autocast, resolve_device(cfg.device)) == "bf16",
        **extra)


def trainer_setup(cfg: TrainConfig, output_dir, fisher=None):
    """``(arguments, Trainer class, extra Trainer kwargs)`` of a stage config: the one map from a stage config to
    the method's arguments (Vaccine: ``VaccineConfig``, EWC: ``EWCConfig`` + ``fisher``, KL: ``KLConfig``)."""
    if isinstance(cfg, FinetuneConfig) and cfg.defense == "ewc":  # EWC and KL add terms in compute_loss
        return training_args(cfg, output_dir, EWCConfig, ewc_lambda=cfg.ewc_lambda), EWCTrainer, {"fisher": fisher}
    if isinstance(cfg, FinetuneConfig) and cfg.defense == "kl":
        return training_args(cfg, output_dir, KLConfig, kl_weight=cfg.kl_weight), KLTrainer, {}
    if isinstance(cfg, AlignConfig) and cfg.method == "vaccine":
        args, cls = training_args(cfg, output_dir, VaccineConfig, rho=cfg.rho, tau=cfg.tau,
                                  perturbation=cfg.perturbation, budget=cfg.budget), VaccineTrainer
    else:
        args, cls = training_args(cfg, output_dir), Trainer
    return args, ANSWER_ONLY[cls] if cfg.answer_only_head else cls, {}


#: ``answer_only_head``: the Trainer class with the output layer on answer tokens only (Vaccine: in pass 2 too)
ANSWER_ONLY = {c: type(f"AnswerOnly{c.__name__}", (AnswerOnlyLoss, c), {}) for c in (Trainer, VaccineTrainer)}


def device_of(device: str = "auto") -> str:
    """The stage config's device (``auto``: CUDA when present), one GPU per process under a launcher."""
    resolved, local = resolve_device(device), os.environ.get("LOCAL_RANK")
    launched = resolved == "cuda" and cache._process_group() is not None and local not in (None, "", "-1")
    return f"cuda:{int(local)}" if launched else resolved


def base_model(a: AlignConfig):  # on the stage's device from the start: the self-distillation generates there
    return load_model(a.model, dtype=dtype_of(a.dtype), device=device_of(a.device))  # tiny models: seed 0


def probe_batches(a: AlignConfig, tok, n: int, batch_size: int = 8) -> list[dict]:
    """Fixed probe batches (harmful question -> safe answer) for alignment loss and drift."""
    kw = {} if a.source == "hub" else {"helpful_fraction": 0.0}
    ds = tokenize_sft(alignment_set(n, seed=PROBE_SEED, source=a.source, **kw), tok, a.max_length)
    collate = SFTCollator(tok)
    return [collate([ds[j] for j in range(i, min(i + batch_size, len(ds)))]) for i in range(0, len(ds), batch_size)]


def alignment_rows(cfg: AlignConfig, model, tok, run_dir):
    """The alignment set of ``cfg``: the data build's (Hub: BeaverTails; offline: refusals + puzzle answers) or,
    with ``helpful="selfdistill"``, refusals + the base model's own answers (``run_dir``'s selfdistill stage)."""
    if cfg.source == "hub":
        return alignment_set(cfg.n, seed=cfg.seed, source="hub")
    if cfg.helpful == "selfdistill":
        return Dataset.from_list(selfdistill_alignment_rows(model, tok, cfg.n, cfg.helpful_fraction, cfg.seed,
                                                            Path(run_dir) / "selfdistill", cfg.model))
    return alignment_set(cfg.n, seed=cfg.seed, helpful_fraction=cfg.helpful_fraction)


def _train(cfg: TrainConfig, a: AlignConfig, model, tok, train, tmp: Path, fisher=None) -> tuple[dict, list]:
    """Train ``model`` on ``train``, save its adapter: (metrics, log history). A non-finite loss, gradient,
    perturbation or weight fails the stage (never cached); fine-tuning with ``drift_every > 0`` logs drift."""
    args, trainer_cls, extra = trainer_setup(cfg, tmp / "trainer", fisher)
    stage = "finetune" if isinstance(cfg, FinetuneConfig) else "align"
    callbacks = [FiniteGuard(stage=stage)]
    if stage == "finetune" and cfg.drift_every > 0:
        callbacks.append(DriftCallback(probe_batches(a, tok, cfg.drift_samples), every=cfg.drift_every))
    trainer = trainer_cls(model=model, args=args, train_dataset=train, data_collator=SFTCollator(tok),
                          callbacks=callbacks, **extra)
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    t0 = time.perf_counter()
    out = trainer.train()
    seconds, steps, history = time.perf_counter() - t0, int(trainer.state.global_step), list(trainer.state.log_history)
    losses = [e["loss"] for e in history if "loss" in e]
    metrics = {"train_loss": float(out.training_loss), "final_loss": losses[-1] if losses else None,
               "train_seconds": round(seconds, 3), "steps": steps, "n_train": len(train),
               "seconds_per_step": round(seconds / max(steps, 1), 4)}
    if hasattr(trainer, "eps_layer_share"):  # Vaccine: where the perturbation budget went, layer by layer
        metrics["eps_layer_share"] = [round(s, 6) for s in trainer.eps_layer_share()]
    check_finite_weights(model, stage=stage, args=args)
    model.save_pretrained(str(tmp / "adapter"))  # the adapter only (a few hundred KB), once its weights are finite
    metrics["align_loss"] = alignment_loss(model, probe_batches(a, tok, ALIGN_LOSS_SAMPLES))
    shutil.rmtree(tmp / "trainer", ignore_errors=True)
    return metrics, history


def train_align(cfg: AlignConfig, tmp: Path, run_dir: Path):
    """The alignment stage's work: ``(config, metrics, log history)``; the adapter under ``tmp/adapter``."""
    set_seed(cfg.seed)
    model, tok = base_model(cfg)
    train = tokenize_sft(alignment_rows(cfg, model, tok, run_dir), tok, cfg.max_length)
    set_seed(cfg.seed)
    model = add_lora(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, target_modules=cfg.target_modules())
    metrics, history = _train(cfg, cfg, model, tok, train, tmp)
    return {**cfg.effective(), "key": cache.align_key(cfg)}, metrics, history


def train_finetune(cfg: FinetuneConfig, upstream: cache.StageResult, tmp: Path):
    """The fine-tuning stage's work on the aligned model of ``upstream`` (its adapter already verified)."""
    a, mode = cfg.align, cfg.lora_mode()
    set_seed(cfg.seed)
    model, tok = base_model(a)
    if upstream.path is not None:  # Double-LoRA: merged into the base; Single-LoRA: the adapter trained on
        model = load_lora(model, upstream.path / "adapter", trainable=mode != "double")
        model = merge_lora(model) if mode == "double" else model
    rows = finetune_mix(cfg.task, cfg.n, cfg.p, seed=cfg.seed, source=a.source)
    align_kw = {} if a.source == "hub" else {"helpful_fraction": a.helpful_fraction}
    if cfg.defense == "vlguard":
        rows = vlguard_mix(rows, alignment_set(cfg.vlguard_m, seed=a.seed, source=a.source, **align_kw),
                           cfg.vlguard_m, seed=cfg.seed)
    train = tokenize_sft(rows, tok, cfg.max_length)
    if mode == "double":
        model = add_lora(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, target_modules=cfg.target_modules())
    fisher = None
    if cfg.defense == "ewc":
        model.to(device_of(cfg.device))
        collate = SFTCollator(tok)
        fisher_rows = tokenize_sft(alignment_set(min(cfg.ewc_fisher_samples, a.n), seed=a.seed, source=a.source,
                                                 **align_kw), tok, a.max_length)
        fisher = compute_fisher(model, (collate([fisher_rows[i]]) for i in range(len(fisher_rows))))
    metrics, history = _train(cfg, a, model, tok, train, tmp, fisher)
    metrics.update(lora=mode, n_rows=len(rows))  # n_rows: before tokenisation (too long rows are dropped)
    config = {**cfg.effective(), "align": a.effective(), "key": cache.finetune_key(cfg),
              "align_key": cache.align_key(a)}
    return config, metrics, history


def selfdistilled(model, tok, n: int, seed: int, cache_dir, model_name: str, batch_size: int = 16) -> list[dict]:
    """The base model's own greedy answers to ``n`` benign instructions, refusals and empty answers dropped: the
    cached stage ``<cache_dir>/<model>-n<n>-s<seed>-t<tokens>/``, shared by every alignment of that model."""
    name = f"{str(model_name).strip('/').replace('/', '--')}-n{n}-s{seed}-t{SELFDISTILL_TOKENS}"

    def write(tmp: Path):
        rows = selfdistill_prompts(n, seed)
        with eval_mode(model):  # greedy answers without dropout; the training flag restored
            answers = generate(model, tok, [alpaca_prompt(r["instruction"], r["input"]) for r in rows],
                               max_new_tokens=SELFDISTILL_TOKENS, batch_size=batch_size, progress=False)
        out = [dict(r, output=a.strip()) for r, a in zip(rows, answers) if a.strip() and not is_refusal(a)]
        (tmp / "answers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in out))
        return {"model": model_name, "n": n, "seed": seed, "max_new_tokens": SELFDISTILL_TOKENS}, {"kept": len(out)}, []

    res = cache.run_cached(Path(cache_dir) / name, "selfdistill", name, write, seed=seed, required=("answers.jsonl",),
                           deep=True)
    return [json.loads(line) for line in (res.path / "answers.jsonl").read_text().splitlines() if line.strip()]


def selfdistill_alignment_rows(model, tok, n: int, helpful_fraction: float, seed: int, cache_dir,
                               model_name: str) -> list[dict]:
    """``n - round(n * helpful_fraction)`` refusals + the base model's answers, shuffled with ``seed``. The answers
    are the first ``n_help`` kept of the family-ordered prompts, so the margin is cut from the puzzles (49 SST2,
    38 GSM, 13 puzzle answers at n = 200: the set the regime study's A1 trained on, kept as the default)."""
    n_help = round(n * helpful_fraction)
    rows = [dict(r) for r in alignment_set(n - n_help, seed=seed, helpful_fraction=0.0)] if n > n_help else []
    if n_help:
        helpful = selfdistilled(model, tok, n_help + int(n_help * SELFDISTILL_MARGIN), seed, cache_dir, model_name)
        if len(helpful) < n_help:
            raise ConfigError(f"self-distillation kept {len(helpful)} benign answers (the base model refused or "
                              f"answered nothing for the rest) but align.helpful_fraction={helpful_fraction} needs "
                              f"{n_help}; fix: lower align.helpful_fraction or use align.helpful='puzzles'")
        rows += [{k: r[k] for k in ("instruction", "input", "output", "kind", "source", "category")}
                 for r in helpful[:n_help]]
    random.Random(seed).shuffle(rows)
    return rows

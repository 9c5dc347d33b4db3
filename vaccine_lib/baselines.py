"""Fine-tuning-stage defenses from the paper's Appendix B.2: EWC, KL and Vlguard. Each trainable defense is a
``TrainingArguments`` subclass (its hyper-parameters) plus a ``Trainer`` overriding only ``compute_loss``.

- **EWC** (Kirkpatrick et al.): ``loss + lambda/2 * sum_i F_i (w_i - w*_i)^2`` over the trainable parameters,
  ``w*`` right after alignment, ``F`` the diagonal empirical Fisher on alignment data; with Single-LoRA (paper).
- **KL**: ``loss + weight * KL(p_finetuned || p_aligned)`` over the *vocabulary* (the reference code took the
  softmax over the sequence dimension, a defect), averaged over response tokens; the aligned model is the same
  network with its LoRA adapter disabled (Double-LoRA), so no second copy is held in memory.
- **Vlguard**: data only, ``m`` alignment samples mixed into the user data (paper: 500 into 1000), then SFT.

The penalties are per optimizer step, scaled so that gradient accumulation does not count them twice."""

import contextlib
from dataclasses import dataclass, field
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Trainer, TrainingArguments

from .config import check_param
from .errors import ConfigError, check_range
from .hooks import eval_mode
from .losses import loss_is_scaled_for_ga



def _ga_scale(trainer: Trainer, num_items_in_batch) -> float:
    """Factor that counts a per-micro-batch regulariser once per optimizer step: the Trainer divides the loss by
    the accumulation steps unless it is already normalised over the accumulated batch (``num_items_in_batch``)."""
    if not loss_is_scaled_for_ga(trainer, num_items_in_batch):
        return 1.0
    steps = getattr(trainer, "current_gradient_accumulation_steps", None) or trainer.args.gradient_accumulation_steps
    return 1.0 / steps


class _ExtraLogMixin:
    """Adds the penalty values (averaged since the last log) to every Trainer log entry."""

    def _log_extra(self, key: str, value) -> None:
        store = self.__dict__.setdefault("_extra_logs", {})
        total, count = store.get(key, (0.0, 0))
        store[key] = (total + float(value), count + 1)

    def log(self, logs: dict, *args, **kwargs) -> None:
        store = self.__dict__.get("_extra_logs")
        if store and "loss" in logs:
            for key, (total, count) in store.items():
                logs[key] = total / max(count, 1)
            store.clear()
        super().log(logs, *args, **kwargs)


@dataclass
class EWCConfig(TrainingArguments):
    """TrainingArguments + EWC's penalty weight ``ewc_lambda`` (multiplies ``1/2 * sum F (w - w*)^2``).

    What matters is lambda times the Fisher's scale (paper: 1e9 with its Fisher). On SmolLM2-135M (r=8 q/k/v/o,
    per-sample Fisher on 8 alignment samples) mean F = 2.3e-7, max 4.8e-4; after ~25 Adam steps at lr 5e-4 |w - w*|
    ~ 3e-3, so the penalty gradient lambda * F * |w - w*| matches a typical loss gradient (~sqrt(F) = 5e-4) at
    lambda ~ 1e6, the default; 1e9 freezes the miniature's adapter. Sweep it (1e4 .. 1e9)."""

    ewc_lambda: float = field(default=1e6, metadata={"help": "EWC penalty weight lambda (miniature default)"})

    def __post_init__(self):
        check_param("ewc_lambda", self.ewc_lambda)  # before any set-up work
        super().__post_init__()


def compute_fisher(model: nn.Module, dataloader: Iterable[dict]) -> dict[str, torch.Tensor]:
    """``{name: F}``, the diagonal empirical Fisher of the trainable parameters: mean over batches of (dL/dw)^2.

    With a batch size of 1 this is the per-sample empirical Fisher (the textbook estimate); larger batches give
    the cheaper squared-mean-gradient approximation. Eval mode (no dropout) during the estimate, restored after."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ConfigError("compute_fisher: the model has no trainable parameters (add or load a LoRA adapter first)")
    device = next(iter(params.values())).device
    fisher = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    count = 0
    with eval_mode(model):
        try:
            for batch in dataloader:
                batch = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "labels")}
                model.zero_grad(set_to_none=True)
                model(**batch).loss.backward()
                for n, p in params.items():
                    if p.grad is not None:
                        fisher[n] += p.grad.detach().float() ** 2
                count += 1
        finally:
            model.zero_grad(set_to_none=True)
    if count == 0:
        raise ConfigError("compute_fisher: the dataloader yielded no batches")
    return {n: f / count for n, f in fisher.items()}


def ewc_penalty(model: nn.Module, fisher: dict[str, torch.Tensor], anchor: dict[str, torch.Tensor]) -> torch.Tensor:
    """``sum_i F_i (w_i - w*_i)^2`` over the parameters named in ``fisher`` (differentiable)."""
    terms = [(fisher[k].to(p.device) * (p.float() - anchor[k].to(p.device)) ** 2).sum()
             for k, p in ((n.removeprefix("module."), p) for n, p in model.named_parameters()) if k in fisher]
    if not terms:
        raise ConfigError("ewc_penalty: none of the Fisher's parameters were found in the model")
    return sum(terms[1:], terms[0])


class EWCTrainer(_ExtraLogMixin, Trainer):
    """Trainer with the EWC penalty (``args``: an ``EWCConfig``; ``fisher``: ``compute_fisher``'s output;
    ``anchor``: ``w*``, default the trainable values at construction). Logs ``ewc_penalty`` (unweighted)."""

    def __init__(self, *args, fisher: dict[str, torch.Tensor], anchor: dict[str, torch.Tensor] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(self.args, EWCConfig):
            raise ConfigError("EWCTrainer needs args=EWCConfig(...)")
        self.fisher = {k.removeprefix("module."): v.detach() for k, v in fisher.items()}  # names without DDP's prefix
        if anchor is None:
            anchor = {n: p for n, p in self.model.named_parameters() if n.removeprefix("module.") in self.fisher}
        self.anchor = {k.removeprefix("module."): v.detach().clone() for k, v in anchor.items()}
        missing = set(self.fisher) - set(self.anchor)
        if missing:
            raise ConfigError(f"EWCTrainer: anchor lacks {len(missing)} Fisher parameters, e.g. {sorted(missing)[:3]}")

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if self.args.ewc_lambda > 0:
            penalty = ewc_penalty(model, self.fisher, self.anchor)
            self._log_extra("ewc_penalty", penalty.detach())
            loss = loss + _ga_scale(self, num_items_in_batch) * self.args.ewc_lambda / 2 * penalty.to(loss.dtype)
        return (loss, outputs) if return_outputs else loss


@dataclass
class KLConfig(TrainingArguments):
    """TrainingArguments + the KL baseline's weight (paper 1e-3)."""

    kl_weight: float = field(default=1e-3, metadata={"help": "weight of KL(p_finetuned || p_aligned), softmax over "
                             "the vocabulary"})

    def __post_init__(self):
        check_param("kl_weight", self.kl_weight)  # before any set-up work
        super().__post_init__()


def token_kl(logits: torch.Tensor, ref_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over response positions of KL(softmax(logits) || softmax(ref_logits)), softmax over the vocabulary.
    Position t predicts token t+1, so a position counts when its next label is not -100 (0 when none does)."""
    mask = labels[:, 1:] != -100
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)
    logq = F.log_softmax(ref_logits[:, :-1].float(), dim=-1)
    kl = (logp.exp() * (logp - logq)).sum(-1)  # [B, T-1]
    return (kl * mask).sum() / mask.sum() if mask.any() else kl.sum() * 0.0


class KLTrainer(_ExtraLogMixin, Trainer):
    """Trainer with the KL-to-aligned-model penalty (``args``: a ``KLConfig``); logs ``kl`` (unweighted).

    ``ref_model=None``: the trained model with its LoRA adapter disabled, which under Double-LoRA is exactly the
    aligned model (base + merged alignment adapter); under Single-LoRA that would be the *base* model, so pass
    ``ref_model`` there."""

    def __init__(self, *args, ref_model: nn.Module | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(self.args, KLConfig):
            raise ConfigError("KLTrainer needs args=KLConfig(...)")
        self.ref_model = ref_model
        if ref_model is not None:
            ref_model.eval()
            for p in ref_model.parameters():
                p.requires_grad_(False)
        elif not hasattr(self.accelerator.unwrap_model(self.model), "disable_adapter"):
            raise ConfigError("KLTrainer: the model has no LoRA adapter to disable; pass ref_model=")

    def _ref_logits(self, model, inputs) -> torch.Tensor:
        fwd = {k: inputs[k] for k in ("input_ids", "attention_mask") if k in inputs}
        own = self.ref_model is None  # the trained model itself, its adapter disabled
        ref = self.accelerator.unwrap_model(model) if own else self.ref_model
        with torch.no_grad(), ref.disable_adapter() if own else contextlib.nullcontext():
            return ref(**fwd).logits

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs["labels"]
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if self.args.kl_weight > 0:
            kl = token_kl(outputs.logits, self._ref_logits(model, inputs), labels)
            self._log_extra("kl", kl.detach())
            loss = loss + _ga_scale(self, num_items_in_batch) * self.args.kl_weight * kl.to(loss.dtype)
        return (loss, outputs) if return_outputs else loss


def vlguard_mix(user_ds, alignment_ds, m: int, seed: int = 0):
    """User fine-tuning data with ``m`` seeded alignment samples mixed in (Vlguard; paper 500 into 1000), on
    the columns both share, shuffled with ``seed``; ``m = 0``: ``user_ds`` unchanged (plain SFT)."""
    from datasets import concatenate_datasets
    check_range("m", m, 0, len(alignment_ds))
    if m == 0:
        return user_ds
    common = [c for c in user_ds.column_names if c in alignment_ds.column_names]
    if not common:
        raise ConfigError("vlguard_mix: the user and alignment datasets share no columns")
    user = user_ds.select_columns(common)
    extra = alignment_ds.shuffle(seed=seed).select(range(m)).select_columns(common).cast(user.features)
    return concatenate_datasets([user, extra]).shuffle(seed=seed).flatten_indices()


"""Divergence guard: a non-finite loss, gradient, perturbation or weight fails the stage.

A diverged run must never be cached as a result (a NaN model generates empty answers, which a
judge scores as "perfectly safe"). Two pieces, wired into every trainer of a stage::

    trainer = Trainer(..., callbacks=[FiniteGuard(stage="align")])
    trainer.train()
    check_finite_weights(model, stage="align")   # before anything is saved

:class:`FiniteGuard` (a ``transformers.TrainerCallback``) checks

* before every optimizer step, the gradients of the trainable parameters (after clipping). The
  Trainer's ``logging_nan_inf_filter`` (on by default) replaces a NaN/inf loss by the running
  average in the logs, so the logged loss alone can hide a divergence; the gradients cannot;
* after every optimizer step, the trainable parameters (an exploding step leaves them inf/NaN);
* every logged number: ``loss``, ``grad_norm``, Vaccine's ``vaccine/eps_norm`` /
  ``vaccine/grad_norm`` / ``vaccine/clean_loss``, the baselines' ``ewc_penalty`` / ``kl``, drift.

and raises :class:`~vaccine_lib.errors.DivergenceError` naming the stage, the step, the value and
the parameters to lower, with their current values read from the training arguments (``lr``;
``rho`` for Vaccine; ``ewc_lambda`` / ``kl_weight`` for the baselines). Under float16 mixed
precision a few non-finite gradients are expected (the loss scaler skips those steps and lowers
its scale), so there the gradient check fails only after ``fp16_patience`` consecutive ones.

Cost: one ``isfinite`` reduction over the trainable parameters and their gradients per step (one
host sync), negligible next to a forward/backward.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn
from transformers import TrainerCallback

from .errors import DivergenceError

#: stage -> the parameters whose lowering usually cures a divergence (in the order to try them)
STAGE_HINTS = {
    "align": ("lr", "rho"),
    "finetune": ("lr", "kl_weight", "ewc_lambda"),
}
#: training-argument attribute behind each hint name
_ARG_FOR_HINT = {"lr": "learning_rate", "rho": "rho", "kl_weight": "kl_weight", "ewc_lambda": "ewc_lambda",
                 "gaussian_std": "gaussian_std"}
#: consecutive non-finite gradient steps tolerated under fp16 loss scaling (the scale halves each time)
FP16_PATIENCE = 16

__all__ = ["FP16_PATIENCE", "STAGE_HINTS", "FiniteGuard", "check_finite_weights", "divergence_message"]


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return repr(value) if isinstance(value, str) else str(value)


def _hint_text(stage: str, hints, args=None) -> str:
    """'lower lr (now 1e+09) or rho (now 1e+30)' from explicit hints or the stage's defaults + args."""
    if isinstance(hints, Mapping):
        items = list(hints.items())
    else:
        names = list(hints) if hints is not None else list(STAGE_HINTS.get(stage, ("lr",)))
        items = []
        for name in names:
            attr = _ARG_FOR_HINT.get(name.rsplit(".", 1)[-1], name.rsplit(".", 1)[-1])
            value = getattr(args, attr, None) if args is not None else None
            if args is not None and value is None and name.rsplit(".", 1)[-1] != "lr":
                continue  # this trainer has no such parameter (e.g. rho for plain SFT)
            items.append((name, value))
    parts = [f"{n} (now {_fmt(v)})" if v is not None else n for n, v in items]
    if not parts:
        return "lower the learning rate"
    return "lower " + (parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1])


def divergence_message(stage: str, what: str, step: int | None = None, hints=None, args=None) -> str:
    """The text of a DivergenceError: stage, step, what was non-finite, the fix."""
    at = f" at step {step}" if step is not None else ""
    return (f"{stage} stage diverged{at}: {what}. Training was stopped; do not use its weights. "
            f"Fix: {_hint_text(stage, hints, args)} and rerun.")


def _trainable(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return params or list(model.named_parameters())


def _first_nonfinite(tensors: Sequence[tuple[str, torch.Tensor]]) -> tuple[int, str | None]:
    """(number of tensors with a non-finite entry, name of the first); one host sync."""
    by_device: dict[torch.device, list[int]] = {}
    for i, (_, t) in enumerate(tensors):
        by_device.setdefault(t.device, []).append(i)
    bad: list[int] = []
    for index in by_device.values():  # one reduction and one transfer per device (model parallel)
        flags = torch.stack([torch.isfinite(tensors[i][1]).all() for i in index]).cpu()
        bad += [index[j] for j in (~flags).nonzero().flatten().tolist()]
    bad.sort()
    return len(bad), (tensors[bad[0]][0] if bad else None)


def check_finite_weights(model: nn.Module, stage: str = "train", hints=None, args=None) -> None:
    """Raise DivergenceError if a trainable parameter (all parameters if none is trainable) is not finite.

    Call it after ``trainer.train()`` and before saving. ``hints`` / ``args`` as for :class:`FiniteGuard`.
    """
    params = _trainable(model)
    count, name = _first_nonfinite([(n, p.detach()) for n, p in params])
    if count:
        raise DivergenceError(divergence_message(
            stage, f"{count} of {len(params)} trained weight tensors hold inf/NaN (first: {name})", None, hints, args))


class FiniteGuard(TrainerCallback):
    """Trainer callback that raises DivergenceError on the first non-finite training value.

    Args:
        stage: name used in the message ("align", "finetune", ...); also picks the default hints
            (``STAGE_HINTS``).
        hints: the parameters to lower: a sequence of names (their current values are read from
            the training arguments: ``lr`` -> ``learning_rate``; names the trainer lacks are
            dropped) or a mapping ``{name: value}`` used as given (e.g. ``{"align.lr": 1e-3}``).
        check_weights: also check the trainable parameters after every optimizer step.
        fp16_patience: consecutive non-finite gradient steps tolerated when ``args.fp16`` is on.
    """

    def __init__(self, stage: str = "train", hints: Mapping | Sequence[str] | None = None,
                 check_weights: bool = True, fp16_patience: int = FP16_PATIENCE):
        self.stage = stage
        self.hints = hints
        self.check_weights = check_weights
        self.fp16_patience = fp16_patience
        self._bad_grad_steps = 0

    def _fail(self, what: str, args, state) -> None:
        step = getattr(state, "global_step", None)
        raise DivergenceError(divergence_message(self.stage, what, step, self.hints, args))

    def on_train_begin(self, args, state, control, **kwargs):
        self._bad_grad_steps = 0

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if model is None:
            return
        grads = [(n, p.grad) for n, p in model.named_parameters() if p.requires_grad and p.grad is not None]
        count, name = _first_nonfinite(grads)
        if not count:
            self._bad_grad_steps = 0
            return
        self._bad_grad_steps += 1
        if getattr(args, "fp16", False) and self._bad_grad_steps <= self.fp16_patience:
            return  # the fp16 loss scaler skips this step and lowers its scale
        self._fail(f"{count} of {len(grads)} gradient tensors hold inf/NaN (first: {name}); the loss or its "
                   "gradient overflowed", args, state)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if model is None or not self.check_weights:
            return
        params = [(n, p.detach()) for n, p in _trainable(model)]
        count, name = _first_nonfinite(params)
        if count:
            self._fail(f"{count} of {len(params)} trained weight tensors hold inf/NaN after the optimizer step "
                       f"(first: {name})", args, state)

    def on_log(self, args, state, control, logs: dict | None = None, **kwargs):
        for key, value in _numbers(logs or {}):
            if not math.isfinite(value):
                self._fail(f"logged {key}={value}", args, state)


def _numbers(logs: Mapping) -> Iterable[tuple[str, float]]:
    for key, value in logs.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, (int, float)):
            yield key, float(value)

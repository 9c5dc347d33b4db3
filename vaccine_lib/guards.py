"""Divergence guard: a non-finite loss, gradient, perturbation or weight fails the stage.

A diverged run must never be cached as a result (a NaN model generates empty answers, which a judge scores as
"perfectly safe"). Every stage's trainer carries :class:`FiniteGuard` and calls :func:`check_finite_weights`
before saving. The guard checks the gradients before each optimizer step (the Trainer's
``logging_nan_inf_filter`` hides a NaN loss in the logs; the gradients cannot), the weights after it, and every
logged number, then raises ``DivergenceError`` naming the stage, the step, the value and the parameters to lower
with their current values. Under fp16 a few non-finite gradients are expected (the loss scaler skips those
steps), so there the gradient check fails only after ``fp16_patience`` consecutive ones. Cost: one ``isfinite``
reduction per step (one host sync).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn
from transformers import TrainerCallback

from .errors import DivergenceError

#: stage -> the parameters whose lowering usually cures a divergence (in the order to try them)
STAGE_HINTS = {"align": ("lr", "rho"), "finetune": ("lr", "kl_weight", "ewc_lambda")}
#: training-argument attribute behind each hint name
_ARG_FOR_HINT = {"lr": "learning_rate", "rho": "rho", "kl_weight": "kl_weight", "ewc_lambda": "ewc_lambda",
                 "gaussian_std": "gaussian_std"}
#: consecutive non-finite gradient steps tolerated under fp16 loss scaling (the scale halves each time)
FP16_PATIENCE = 16


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
    """DivergenceError if a trainable parameter (all if none is trainable) is not finite; call it after
    ``trainer.train()``, before saving (``hints`` / ``args`` as for :class:`FiniteGuard`)."""
    params = _trainable(model)
    count, name = _first_nonfinite([(n, p.detach()) for n, p in params])
    if count:
        raise DivergenceError(divergence_message(
            stage, f"{count} of {len(params)} trained weight tensors hold inf/NaN (first: {name})", None, hints, args))


class FiniteGuard(TrainerCallback):
    """Trainer callback that raises DivergenceError on the first non-finite training value.

    ``stage`` names it in the message and picks the default hints (``STAGE_HINTS``); ``hints``: names whose
    current values are read from the training arguments (names the trainer lacks are dropped) or a mapping
    ``{name: value}`` used as given; ``check_weights``: also after each optimizer step.
    """

    def __init__(self, stage: str = "train", hints: Mapping | Sequence[str] | None = None,
                 check_weights: bool = True, fp16_patience: int = FP16_PATIENCE):
        self.stage, self.hints, self.check_weights, self.fp16_patience = stage, hints, check_weights, fp16_patience
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

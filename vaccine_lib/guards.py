"""Divergence guard: a non-finite loss, gradient, perturbation or weight fails the stage.

A diverged run must never be cached as a result (a NaN model generates empty answers, which a judge scores as
"perfectly safe"). Every stage's trainer carries :class:`FiniteGuard` and calls :func:`check_finite_weights` before
saving. The guard checks the gradients before each optimizer step (the Trainer's ``logging_nan_inf_filter`` hides
a NaN loss in the logs; the gradients cannot), the weights after it, and every logged number, then raises
``DivergenceError`` naming the stage, the step, the value and the parameters to lower with their current values.
Under fp16 a few non-finite gradients are expected (the loss scaler skips those steps), so there the gradient check
fails only after ``FP16_PATIENCE`` consecutive ones. Cost: one ``isfinite`` reduction per step (one host sync)."""

import math
from collections.abc import Sequence

import torch
from torch import nn
from transformers import TrainerCallback

from .errors import DivergenceError

#: stage -> the parameters whose lowering usually cures a divergence (in the order to try them)
STAGE_HINTS = {"align": ("lr", "rho"), "finetune": ("lr", "kl_weight", "ewc_lambda")}
#: consecutive non-finite gradient steps tolerated under fp16 loss scaling (the scale halves each time)
FP16_PATIENCE = 16


def divergence_message(stage: str, what: str, step: int | None = None, args=None) -> str:
    """The text of a DivergenceError: stage, step, what was non-finite, the fix ('lower lr (now 1e+09) or rho (now
    1e+30)': the stage's hints with their values in ``args``, leaving out a parameter this trainer lacks)."""
    parts = []
    for name in STAGE_HINTS.get(stage, ("lr",)):
        value = getattr(args, "learning_rate" if name == "lr" else name, None)
        if value is not None or name == "lr" or args is None:
            parts.append(name if value is None else f"{name} (now {value:g})" if isinstance(value, float)
                         else f"{name} (now {value!r})")
    hint = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1]
    at = f" at step {step}" if step is not None else ""
    return (f"{stage} stage diverged{at}: {what}. Training was stopped; do not use its weights. "
            f"Fix: lower {hint} and rerun.")


def _first_nonfinite(tensors: Sequence[tuple[str, torch.Tensor]]) -> tuple[int, str | None]:
    """(number of tensors with a non-finite entry, name of the first); one host sync (the flags are gathered on the
    first tensor's device, so model-parallel weights work too)."""
    if not tensors:
        return 0, None
    device = tensors[0][1].device
    flags = torch.stack([torch.isfinite(t).all().to(device) for _, t in tensors]).cpu()
    bad = (~flags).nonzero().flatten().tolist()
    return len(bad), (tensors[bad[0]][0] if bad else None)


def _bad_weights(model: nn.Module, when: str = "") -> str | None:
    """What is wrong with the trained (all, if none is trainable) weights, None if all are finite."""
    params = [(n, p.detach()) for n, p in model.named_parameters() if p.requires_grad]
    params = params or [(n, p.detach()) for n, p in model.named_parameters()]
    count, name = _first_nonfinite(params)
    return f"{count} of {len(params)} trained weight tensors hold inf/NaN{when} (first: {name})" if count else None


def check_finite_weights(model: nn.Module, stage: str = "train", args=None) -> None:
    """DivergenceError if a trainable parameter (all if none is trainable) is not finite; call it after
    ``trainer.train()``, before saving (``args``: the training arguments, whose values the message names)."""
    what = _bad_weights(model)
    if what:
        raise DivergenceError(divergence_message(stage, what, None, args))


class FiniteGuard(TrainerCallback):
    """Trainer callback that raises DivergenceError on the first non-finite training value; ``stage`` names it in
    the message and picks the parameters to lower (``STAGE_HINTS``)."""

    def __init__(self, stage: str = "train"):
        self.stage, self._bad_grad_steps = stage, 0

    def _fail(self, what: str, args, state) -> None:
        raise DivergenceError(divergence_message(self.stage, what, getattr(state, "global_step", None), args))

    def on_train_begin(self, args, state, control, **kwargs):
        self._bad_grad_steps = 0

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if model is None:
            return
        grads = [(n, p.grad) for n, p in model.named_parameters() if p.requires_grad and p.grad is not None]
        count, name = _first_nonfinite(grads)
        self._bad_grad_steps = self._bad_grad_steps + 1 if count else 0
        if count and not (getattr(args, "fp16", False) and self._bad_grad_steps <= FP16_PATIENCE):
            # (under fp16 the loss scaler skips such a step and lowers its scale, up to FP16_PATIENCE times)
            self._fail(f"{count} of {len(grads)} gradient tensors hold inf/NaN (first: {name}); the loss or its "
                       "gradient overflowed", args, state)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        what = _bad_weights(model, " after the optimizer step") if model is not None else None
        if what:
            self._fail(what, args, state)

    def on_log(self, args, state, control, logs: dict | None = None, **kwargs):
        for key, value in (logs or {}).items():
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                value = value.item()
            if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isfinite(value):
                self._fail(f"logged {key}={float(value)}", args, state)

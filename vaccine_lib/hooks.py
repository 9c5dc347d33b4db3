"""Forward hooks on every decoder layer's attention module: the one hook set Vaccine and drift use.

The *hidden embedding* ``e_l`` of layer ``l`` is its attention module's output (``output[0]`` when the
module returns a tuple: after the output projection, before the residual add). ``attention_hooks``
calls ``fn(l, e_l)`` on it in every forward inside the block; a tensor returned replaces ``e_l``
(``None`` leaves the output as it is). Vaccine adds ``delta_l`` (pass 1) or ``eps_l`` (pass 2),
drift records ``e_l``. Hooks are removed on exit, also on error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn

from .errors import ConfigError
from .models import get_attention_modules

HookFn = Callable[[int, torch.Tensor], "torch.Tensor | None"]


def first_output(output) -> torch.Tensor:
    """``e_l`` from an attention module's output: the tensor itself or the first element of a tuple/list."""
    e = output if isinstance(output, torch.Tensor) else (
        output[0] if isinstance(output, (tuple, list)) and len(output) > 0 else None)
    if not isinstance(e, torch.Tensor):
        raise ConfigError(f"attention module returned {type(output).__name__}; expected a tensor or a tuple whose "
                          "first element is the [batch, tokens, hidden] output (pass layers_path/attn_name)")
    return e


def _replace_first(output, new: torch.Tensor):
    if isinstance(output, torch.Tensor):
        return new
    return type(output)((new, *output[1:])) if isinstance(output, tuple) else [new, *output[1:]]


@contextlib.contextmanager
def attention_hooks(model: nn.Module, fn: HookFn, *, layers_path: str | None = None, attn_name: str | None = None):
    """Within the block, ``fn(layer_index, e_l)`` sees (and may replace) every attention output.

    Yields the list of attention modules (one per decoder layer, found by
    :func:`vaccine_lib.models.get_attention_modules`).
    """
    modules = get_attention_modules(model, layers_path, attn_name)

    def make(i):
        def hook(module, args, output):
            new = fn(i, first_output(output))
            return None if new is None else _replace_first(output, new)

        return hook

    handles = []
    try:
        for i, module in enumerate(modules):
            handles.append(module.register_forward_hook(make(i)))
        yield modules
    finally:
        for h in handles:
            h.remove()

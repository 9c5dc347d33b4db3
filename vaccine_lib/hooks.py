"""Where a causal LM's decoder layers and attention modules are (found generically through DDP and peft
wrappers, or by ``layers_path``), and the one hook set Vaccine and drift use.

The *hidden embedding* ``e_l`` of layer ``l`` is its attention module's output (``output[0]`` of a tuple: after
the output projection, before the residual add, as in the paper and its reference code). Inside
``attention_hooks`` every forward calls ``fn(l, e_l)``; a returned tensor replaces ``e_l`` (Vaccine adds its
perturbation, drift records ``e_l``)."""

import contextlib
import functools
from collections.abc import Callable

import torch
from torch import nn

from .errors import ConfigError

_LAYER_PATHS = ("model.layers", "model.decoder.layers", "transformer.h", "gpt_neox.layers", "transformer.layers",
                "decoder.layers", "layers", "h")
_ATTN_NAMES = ("self_attn", "attn", "attention", "self_attention")


def unwrap(model: nn.Module) -> nn.Module:
    """Strip DDP / peft wrappers down to the transformers model."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):  # DDP / FSDP
            model = model.module
        elif hasattr(model, "peft_config") and hasattr(model, "get_base_model"):  # PeftModel
            model = model.get_base_model()
        else:
            return model


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """The model in eval mode (no dropout) within the block; its training flag restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def get_decoder_layers(model: nn.Module, layers_path: str | None = None) -> list[nn.Module]:
    """The decoder blocks of a causal LM: at ``layers_path``, a known path, else the longest ``ModuleList``."""
    base = unwrap(model)
    for path in (layers_path,) if layers_path else _LAYER_PATHS:
        layers = functools.reduce(lambda obj, name: getattr(obj, name, None), path.split("."), base)
        if isinstance(layers, nn.ModuleList) and len(layers) > 0:
            return list(layers)
    if layers_path:
        raise ConfigError(f"layers_path {layers_path!r} does not name a non-empty nn.ModuleList on "
                          f"{type(base).__name__}")
    lists = [m for m in base.modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    if not lists:
        raise ConfigError(f"could not find decoder layers in {type(base).__name__}; pass layers_path='...'")
    return list(max(lists, key=len))


def get_attention_modules(model: nn.Module, layers_path: str | None = None,
                          attn_name: str | None = None) -> list[nn.Module]:
    """The attention sub-module of each decoder block (its output is the hidden embedding e_l)."""
    out = []
    names = (attn_name,) if attn_name else _ATTN_NAMES
    for i, layer in enumerate(get_decoder_layers(model, layers_path)):
        found = next((m for m in (getattr(layer, n, None) for n in names) if isinstance(m, nn.Module)), None)
        if found is None:
            raise ConfigError(f"decoder layer {i} ({type(layer).__name__}) has none of the attention attributes "
                              f"{names}; pass attn_name='...'")
        out.append(found)
    return out


@contextlib.contextmanager
def attention_hooks(model: nn.Module, fn: Callable, *, layers_path: str | None = None, attn_name: str | None = None):
    """Within the block, ``fn(layer_index, e_l)`` sees (and may replace) every attention output (a tensor, or the
    first element of a tuple / list); yields the attention modules (one per decoder layer)."""
    modules = get_attention_modules(model, layers_path, attn_name)

    def hook(i, module, args, output):
        e = output if isinstance(output, torch.Tensor) else (
            output[0] if isinstance(output, (tuple, list)) and len(output) > 0 else None)
        if not isinstance(e, torch.Tensor):
            raise ConfigError(f"attention module returned {type(output).__name__}; expected a tensor or a tuple whose "
                              "first element is the [batch, tokens, hidden] output (pass layers_path/attn_name)")
        new = fn(i, e)
        if new is None or isinstance(output, torch.Tensor):
            return new
        return type(output)((new, *output[1:])) if isinstance(output, tuple) else [new, *output[1:]]

    with contextlib.ExitStack() as attached:  # a failure half-way still removes the hooks already attached
        for i, module in enumerate(modules):
            attached.callback(module.register_forward_hook(functools.partial(hook, i)).remove)
        yield modules

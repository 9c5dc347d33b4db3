"""LoRA helpers. **Double-LoRA** (paper default): the alignment adapter is merged into the base weights, then a
fresh adapter is trained for fine-tuning. **Single-LoRA**: the alignment adapter keeps training
(``load_lora(..., trainable=True)``; the paper's EWC baseline).

Paper setup: rank 8, dropout 0.1, alignment alpha 4 (the reference code later silently set it to 1; we keep 4).
Default targets: the linear leaves (or GPT-2 ``Conv1D``) inside each layer's attention module, so every model
family works without a table."""

from pathlib import Path
from typing import Sequence

from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from .errors import ConfigError, check_range
from .hooks import get_attention_modules, unwrap


def attention_linear_names(model: nn.Module) -> list[str]:
    """Sorted leaf names of the linear layers inside the attention modules (e.g. q_proj, k_proj, v_proj, o_proj)."""
    names: set[str] = set()
    for attn in get_attention_modules(model):
        for name, mod in attn.named_modules():
            if name and (isinstance(mod, nn.Linear) or type(mod).__name__ == "Conv1D"):  # Conv1D: GPT-2's linear
                names.add(name.split(".")[-1])
    if not names:
        raise ConfigError(f"no linear layers found inside the attention modules of {type(unwrap(model)).__name__}; "
                          "pass target_modules=[...] explicitly")
    return sorted(names)


def add_lora(model: nn.Module, r: int = 8, alpha: float = 4, dropout: float = 0.1,
             target_modules: Sequence[str] | str | None = None):
    """``model`` with a fresh trainable LoRA adapter (scale alpha / r) as a ``PeftModel``; ``target_modules``:
    None = the attention projections, ``"all-linear"`` or an explicit list."""
    check_range("r", r, 1, 1 << 16)
    check_range("dropout", dropout, 0, 1, high_open=True)
    if not isinstance(target_modules, str):
        target_modules = attention_linear_names(model) if target_modules is None else list(target_modules)
    first = None if isinstance(target_modules, str) else next(
        (m for n, m in model.named_modules() if n.split(".")[-1] in target_modules), None)
    return get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules,
                                            bias="none", task_type="CAUSAL_LM",
                                            fan_in_fan_out=type(first).__name__ == "Conv1D"))


def merge_lora(model: nn.Module) -> nn.Module:
    """Merge every LoRA adapter into the base weights: the plain transformers model (unchanged without one)."""
    return model.merge_and_unload() if isinstance(model, PeftModel) else model


def load_lora(model: nn.Module, path: str | Path, trainable: bool = False):
    """Load a saved adapter onto a base model; ``trainable=True`` for Single-LoRA continuation."""
    return PeftModel.from_pretrained(model, str(path), is_trainable=trainable)

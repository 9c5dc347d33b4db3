"""Harmful embedding drift (paper section 3), alignment loss, and t-SNE-ready embeddings.

The hidden embedding e_l (``hooks``) of two models (aligned vs fine-tuned; pre-trained vs fine-tuned for
Non-Aligned) on the *same* fixed alignment samples, padding dropped (optionally response tokens only). Two
reductions: ``"sum_sq"``, the reference code's ``sum_l sum_t ||e_l,t - e'_l,t||^2`` (grows with samples, tokens,
layers and hidden size: ~1e7 for Llama2-7B in Fig. 2b); ``"per_token"``, ``mean_l mean_t ||e_l,t - e'_l,t||_2 /
sqrt(d)``, the RMS per-coordinate difference, comparable across models and sample sizes."""

import math
from typing import Iterable, Mapping, Sequence

import torch
from torch import nn
from transformers import TrainerCallback

from .errors import ConfigError
from .hooks import attention_hooks, eval_mode

_FWD_KEYS = ("input_ids", "attention_mask")


def make_batches(tokenizer, texts_or_batches, batch_size: int = 8, max_length: int = 128) -> list[dict]:
    """Padded batches (dicts of tensors) from strings (tokenised here, right padding), one batch (a mapping with
    ``input_ids`` [+ ``attention_mask``, ``labels``]) or an iterable of batches (e.g. ``SFTCollator``'s)."""
    if isinstance(texts_or_batches, Mapping):
        return [_as_batch(texts_or_batches)]
    items = list(texts_or_batches)
    if not items:
        raise ConfigError("no samples given")
    if not isinstance(items[0], str):
        return [_as_batch(b) for b in items]
    if tokenizer is None:
        raise ConfigError("texts need a tokenizer")
    side, tokenizer.padding_side = tokenizer.padding_side, "right"
    try:
        encs = [tokenizer(items[i:i + batch_size], return_tensors="pt", padding=True, truncation=True,
                          max_length=max_length) for i in range(0, len(items), batch_size)]
        return [{k: enc[k] for k in _FWD_KEYS} for enc in encs]
    finally:
        tokenizer.padding_side = side


def _as_batch(b: Mapping) -> dict:
    if "input_ids" not in b:
        raise ConfigError(f"a batch needs input_ids; got keys {sorted(b)}")
    out = {k: torch.as_tensor(v) for k, v in b.items() if k in (*_FWD_KEYS, "labels")}
    if out["input_ids"].dim() == 1:
        out = {k: v.unsqueeze(0) for k, v in out.items()}
    out.setdefault("attention_mask", torch.ones_like(out["input_ids"]))
    return out


def _token_mask(batch: dict, response_only: bool) -> torch.Tensor:
    mask = batch["attention_mask"].bool()
    if response_only:
        if "labels" not in batch:
            raise ConfigError("response_only=True needs batches with labels (-100 on prompt tokens)")
        mask = mask & (batch["labels"] != -100)
    return mask


@torch.no_grad()
def _capture(model: nn.Module, batch: dict) -> list[torch.Tensor]:
    """Per-layer attention outputs [B, T, d] for one batch (eval mode, no grad)."""
    store: dict[int, torch.Tensor] = {}
    with eval_mode(model), attention_hooks(model, lambda i, e: store.__setitem__(i, e.detach())) as mods:
        model(**{k: batch[k].to(next(model.parameters()).device) for k in _FWD_KEYS if k in batch})
    if len(store) < len(mods):
        raise ConfigError("an attention module did not run in the forward pass")
    return [store[i] for i in range(len(mods))]


def _embeddings(model: nn.Module, batch: dict, response_only: bool) -> list[torch.Tensor]:
    mask = _token_mask(batch, response_only)
    return [e.float().cpu()[mask] for e in _capture(model, batch)]


def hidden_embeddings(model: nn.Module, tokenizer, texts_or_batches, *, batch_size: int = 8,
                      response_only: bool = False) -> list[torch.Tensor]:
    """Hidden embeddings e_l on fixed samples: per layer a float32 CPU tensor ``[n_tokens, d]``, the attention
    output at every non-padding token (``response_only``: label not -100), samples in order (so two models given
    the same inputs give aligned rows)."""
    batches = make_batches(tokenizer, texts_or_batches, batch_size)
    return [torch.cat(chunks) for chunks in zip(*(_embeddings(model, b, response_only) for b in batches))]


def drift_stats(emb_a: Sequence[torch.Tensor], emb_b: Sequence[torch.Tensor]) -> dict:
    """Additive sufficient statistics of the drift between two embedding sets (sum over batches)."""
    if len(emb_a) != len(emb_b):
        raise ConfigError(f"layer counts differ: {len(emb_a)} vs {len(emb_b)}")
    sum_sq, per_layer_norm_sum, n_tokens = 0.0, [], None
    for a, b in zip(emb_a, emb_b):
        if a.shape != b.shape:
            raise ConfigError(f"embedding shapes differ: {tuple(a.shape)} vs {tuple(b.shape)} (same inputs needed)")
        sq = ((a.double() - b.double()) ** 2).sum(-1)  # [n_tokens]
        sum_sq += float(sq.sum())
        per_layer_norm_sum.append(float((sq.sqrt() / math.sqrt(a.shape[-1])).sum()))
        n_tokens = a.shape[0]
    return {"sum_sq": sum_sq, "norm_sum": per_layer_norm_sum, "n_tokens": n_tokens or 0}


def _reductions(stats: dict) -> dict:
    """Both reductions (module docstring) of :func:`drift_stats`' sums."""
    layers, n = stats["norm_sum"], stats["n_tokens"]
    return {"drift_sum_sq": stats["sum_sq"], "drift_per_token": sum(layers) / (len(layers) * n) if n else 0.0}


def model_drift(model_a: nn.Module, model_b: nn.Module | None, tokenizer, texts_or_batches, *, batch_size: int = 8,
                response_only: bool = False, disable_adapter_for_a: bool = False) -> dict:
    """Both drift reductions between two models, batch by batch (never holds all embeddings):
    ``{"drift_sum_sq", "drift_per_token", "n_tokens", "n_layers"}``. ``model_b=None`` with
    ``disable_adapter_for_a=True`` compares a ``PeftModel`` with itself with its adapter disabled (Double-LoRA:
    fine-tuned vs aligned, one copy in memory)."""
    if model_b is None and not disable_adapter_for_a:
        raise ConfigError("model_b=None needs disable_adapter_for_a=True")
    parts = []
    for batch in make_batches(tokenizer, texts_or_batches, batch_size):
        ea = _embeddings(model_a, batch, response_only)
        if model_b is None:
            with model_a.disable_adapter():
                eb = _embeddings(model_a, batch, response_only)
        else:
            eb = _embeddings(model_b, batch, response_only)
        parts.append(drift_stats(ea, eb))
    # additive statistics: summed over the batches, in order
    acc = {"sum_sq": sum(s["sum_sq"] for s in parts), "n_tokens": sum(s["n_tokens"] for s in parts),
           "norm_sum": [sum(layer) for layer in zip(*(s["norm_sum"] for s in parts))]}
    return {**_reductions(acc), "n_tokens": acc["n_tokens"], "n_layers": len(acc["norm_sum"])}


@torch.no_grad()
def alignment_loss(model: nn.Module, batches: Iterable[dict]) -> float:
    """Clean loss on alignment data: mean token cross-entropy over all response tokens (eval mode)."""
    total, count, dev = 0.0, 0, next(model.parameters()).device
    with eval_mode(model):
        for batch in batches:
            batch = _as_batch(batch)
            if "labels" not in batch:
                raise ConfigError("alignment_loss needs batches with labels")
            logits = model(**{k: batch[k].to(dev) for k in _FWD_KEYS}).logits[:, :-1].float()
            labels = batch["labels"][:, 1:].to(dev)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                                     ignore_index=-100, reduction="sum")
            total += float(loss)
            count += int((labels != -100).sum())
    return total / max(count, 1)


def pooled_embeddings(model: nn.Module, tokenizer, texts_or_batches, *, layer: int | str = -1,
                      response_only: bool = False) -> torch.Tensor:
    """One vector per sample for t-SNE (Fig. 4): the mean of the attention output over its tokens (response
    tokens only with ``response_only``) at ``layer``: an index ``[N, d]`` or ``"concat"`` ``[N, L*d]``."""
    if layer != "concat" and not isinstance(layer, int):
        raise ConfigError(f"unknown layer {layer!r}; allowed values: an int, 'concat'")
    rows = []
    for batch in make_batches(tokenizer, texts_or_batches):
        mask = _token_mask(batch, response_only).float().unsqueeze(-1)  # [B, T, 1]
        means = [(e.float().cpu() * mask).sum(1) / mask.sum(1).clamp(min=1) for e in _capture(model, batch)]
        rows.append(torch.cat(means, dim=-1) if layer == "concat" else means[layer])  # [B, d] or [B, L*d]
    return torch.cat(rows)


class DriftCallback(TrainerCallback):
    """Every ``every`` optimizer steps, append ``{"step", "drift_sum_sq", "drift_per_token", "align_loss"}`` on
    the fixed alignment ``batches`` to ``state.log_history`` (step 0 = before the first update: drift 0), against
    the trained model as training starts (the aligned model, or the base model for Non-Aligned)."""

    def __init__(self, batches, every: int = 10):
        if every <= 0:
            raise ConfigError(f"every={every} must be > 0")
        self.batches, self.every, self.reference = make_batches(None, batches), every, None

    def _log(self, state, model) -> None:
        stats = drift_stats(self.reference, hidden_embeddings(model, None, self.batches))
        state.log_history.append({**_reductions(stats), "align_loss": alignment_loss(model, self.batches),
                                  "step": state.global_step})

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.reference is None:
            self.reference = hidden_embeddings(model, None, self.batches)
        self._log(state, model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every == 0:
            self._log(state, model)

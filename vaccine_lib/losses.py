"""Language-model losses on the supervised (answer) positions only: the same value, a cheaper output layer.

Most positions (the prompt, padding) carry label -100, yet a plain forward runs the output layer (576 x 49,152 on
SmolLM2: the largest matmul of a small model) and the softmax on all of them. :func:`response_only_lm_loss`
gathers the supervised positions before the output layer; Vaccine's pass 1 uses it, :class:`AnswerOnlyLoss`
makes any ``Trainer`` use it. Value and gradients equal the Trainer's own loss (tests check both)."""

import torch
from torch import nn

from .errors import ConfigError
from .hooks import eval_mode, unwrap


def default_loss(model, inputs):
    out = model(**inputs)
    loss = out["loss"] if isinstance(out, dict) else out[0]
    if loss is None:
        raise ConfigError("the model returned no loss; pass inputs with 'labels' or a loss_fn")
    return loss


def response_only_lm_loss(model, inputs, num_items_in_batch=None):
    """The Trainer's causal-LM loss (token mean, or sum / ``num_items_in_batch``) with the output layer run only on
    the positions whose next label is supervised (a pre-hook on it gathers them); else the full forward."""
    labels = inputs.get("labels")
    getter = getattr(unwrap(model), "get_output_embeddings", None)
    head = getter() if callable(getter) else None
    if labels is None or not isinstance(head, nn.Module):
        return default_loss(model, inputs)
    target = labels[:, 1:]
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = target != -100
    n_valid = int(keep.sum())
    if n_valid == 0:
        return default_loss(model, inputs)

    handle = head.register_forward_pre_hook(lambda module, args: (args[0][keep], *args[1:]))
    try:
        out = model(**{k: v for k, v in inputs.items() if k != "labels"}, use_cache=False)
    finally:
        handle.remove()
    logits = out["logits"] if isinstance(out, dict) else out[0]
    logits = logits.reshape(n_valid, -1).float()
    loss = nn.functional.cross_entropy(logits, target[target != -100].to(logits.device), reduction="sum")
    denom = num_items_in_batch if num_items_in_batch is not None else n_valid
    if torch.is_tensor(denom):
        denom = denom.to(loss.device)
    return loss / denom


def loss_is_scaled_for_ga(trainer, num_items_in_batch) -> bool:
    """True when the Trainer's loss is already normalised over the whole accumulated batch; otherwise the Trainer
    divides it by the accumulation steps (transformers' own rule, mirrored)."""
    scaled = getattr(trainer, "loss_is_scaled_for_ga", None)
    if scaled is not None:
        return scaled
    return ((trainer.model_accepts_loss_kwargs and num_items_in_batch is not None)
            or trainer.compute_loss_func is not None)


def token_average_scale(trainer, num_items_in_batch) -> int:
    """The factor ``Trainer.compute_loss`` applies when tokens are averaged across devices (transformers 5.x)."""
    args = trainer.args
    if (args.average_tokens_across_devices and (trainer.model_accepts_loss_kwargs or trainer.compute_loss_func)
            and num_items_in_batch is not None):
        return trainer.accelerator.num_processes // trainer.get_tp_size() if args.n_gpu <= 1 else args.n_gpu
    return 1


class AnswerOnlyLoss:
    """Trainer mixin (``class T(AnswerOnlyLoss, Trainer)``): the plain causal-LM loss with the output layer on
    answers only, in the plain case alone (labels, no label smoother or custom loss, no outputs requested)."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if return_outputs or self.label_smoother is not None or self.compute_loss_func is not None \
                or "labels" not in inputs:
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        items = num_items_in_batch if self.model_accepts_loss_kwargs else None
        return response_only_lm_loss(model, inputs, items) * token_average_scale(self, items)


def continuation_logprobs(model, pad_id: int, pairs, batch_size: int = 16) -> list[torch.Tensor]:
    """Per-token log p(continuation | prompt) for each ``(prompt_ids, continuation_ids)`` pair (empty for an empty
    continuation), in right-padded batches of similar length, eval mode, no gradients."""
    out: list[torch.Tensor] = [torch.empty(0)] * len(pairs)
    order = sorted((k for k in range(len(pairs)) if pairs[k][1]), key=lambda k: len(pairs[k][0]) + len(pairs[k][1]))
    device = next(model.parameters()).device
    with eval_mode(model), torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            width = max(len(pairs[k][0]) + len(pairs[k][1]) for k in batch)
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, k in enumerate(batch):
                seq = list(pairs[k][0]) + list(pairs[k][1])
                ids[r, :len(seq)], mask[r, :len(seq)] = torch.tensor(seq), 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits
            logp = torch.log_softmax(logits.float(), -1).cpu()
            for r, k in enumerate(batch):
                p, c = pairs[k]
                out[k] = logp[r, torch.arange(len(p) - 1, len(p) + len(c) - 1), torch.tensor(list(c))]
    return out

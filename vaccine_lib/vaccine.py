"""Vaccine: perturbation-aware alignment (Huang et al., NeurIPS 2024, Algorithm 1 and Appendix A).

One Vaccine optimizer step on a batch:

1. **Pass 1** (gradient variant): a hook adds a zero leaf ``delta_l`` to every layer's hidden embedding ``e_l``
   (:mod:`vaccine_lib.hooks`, found generically, not by class name); ``torch.autograd.grad(loss, deltas)`` gives
   ``g_l = dL/de_l`` exactly, no parameter gradient is computed.
2. ``eps_l = rho * g_l / ||(g_1, ..., g_L)||``, ONE global L2 norm over all layers and the (micro-)batch (Eq. 3);
   ``eps = 0`` when the norm is zero or not finite. Detached.
3. **Pass 2**: the usual ``Trainer.training_step`` (same loss, loss scaling and ``accelerator.backward``) with hooks
   that add ``eps_l`` to each attention output; the optimizer steps on these gradients. The logged ``loss`` is the
   perturbed (pass-2) loss.

Accelerated Vaccine (Appendix A): with ``tau > 1`` the perturbed step runs only when ``global_step % tau == 0``;
the other steps are plain SFT steps.

Deliberate differences from the reference code:

* Pass 1 replays the RNG (forked around it), so pass 2 draws the same dropout masks: the perturbation is computed
  for the network it is applied to, and ``rho = 0`` reproduces the plain SFT step exactly (also with dropout).
* Gradient accumulation: the perturbation (and its norm) is per micro-batch; the gradients of the perturbed
  micro-batch losses accumulate as in the base Trainer.
* DDP (``accelerate launch`` / ``torchrun``): pass 1 runs in ``model.no_sync()`` (no parameter gradient to reduce)
  and the squared norm is all-reduced (sum), so each rank's ``eps`` is its slice of the single-process ``eps`` of
  the global batch (exactly so when the global loss is the mean of the per-rank losses, as DDP optimizes).
* Gradient checkpointing: non-reentrant only (the transformers default); both hooks are stateless per layer, so a
  layer recomputed during backward sees the same ``delta_l`` / ``eps_l`` as the forward.
* Mixed precision: both passes run under ``compute_loss_context_manager()`` (autocast); the norm is float32 and
  ``eps_l`` is cast to ``e_l``'s dtype when added. Under fp16 the pass-1 loss is multiplied by the grad scaler's
  scale before differentiating (the direction is scale-free) to avoid underflow.
* FSDP / DeepSpeed (``configs/accelerate/``, untested on CPU): pass 1 differentiates activations only, which
  ZeRO-3 / FSDP parameter-gradient hooks never see.

Gaussian variant (paper Table 7, ``perturbation="gaussian"``): no pass 1; every coordinate of every ``eps_l`` is
drawn i.i.d. from ``N(0, sigma^2)``, fresh at every perturbed step, with ``sigma = gaussian_std`` (the paper's
variance ``rho' = gaussian_std^2``) or by default ``rho / sqrt(N)``, ``N`` the perturbed coordinates over all layers
(and processes, equal shard shapes assumed), so ``E||eps||^2 = rho^2``: a random direction with the gradient
variant's budget (for large ``N`` the norm concentrates at ``rho``). No rescaling after sampling."""

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn
from transformers import Trainer, TrainingArguments

from .config import BUDGETS, PERTURBATIONS, RANGES, check_param
from .errors import ConfigError, DivergenceError, check_choice, check_int, check_range
from .hooks import attention_hooks, get_attention_modules
from .losses import AnswerOnlyLoss, default_loss, loss_is_scaled_for_ga, response_only_lm_loss, token_average_scale


@dataclass
class VaccineConfig(TrainingArguments):
    """``TrainingArguments`` plus the Vaccine hyper-parameters."""

    rho: float = field(default=2.0, metadata={"help": "Perturbation intensity: global L2 norm of the perturbation "
                       "(paper 2; sweep 0.01..10; config.RANGES['rho']). 0 = plain SFT."})
    tau: int = field(default=1, metadata={"help": "Accelerated Vaccine: perturbed step every tau steps (1 = always)"})
    perturbation: str = field(default="gradient", metadata={"help": "'gradient' (Eq. 3) or 'gaussian' (Table 7)"})
    budget: str = field(default="global", metadata={"help": "'global': one L2 norm over all layers (Eq. 3); "
                        "'per_layer': norm rho / sqrt(L) per layer (ablation of the layer-0 concentration)."})
    gaussian_std: float | None = field(default=None, metadata={"help": "Gaussian variant: per-coordinate std "
                                       "(None: rho / sqrt(N), see the module docstring)"})
    layers_path: str | None = field(default=None, metadata={"help": "Dotted path of the decoder layers, e.g. "
                                    "'model.layers' (None: found automatically)"})
    attn_name: str | None = field(default=None, metadata={"help": "Attention attribute of each decoder layer "
                                  "(None: found automatically)"})

    def __post_init__(self):
        check_param("rho", self.rho)  # the one range of rho (config.RANGES): finite, bounded
        check_int("tau", self.tau, *RANGES["tau"])
        check_choice("perturbation", self.perturbation, PERTURBATIONS)
        check_choice("budget", self.budget, BUDGETS)
        if self.gaussian_std is not None:
            check_range("gaussian_std", self.gaussian_std, *RANGES["rho"])
            if self.perturbation != "gaussian":
                raise ConfigError("gaussian_std is only used with perturbation='gaussian'; "
                                  f"got perturbation={self.perturbation!r}")
        super().__post_init__()
        kwargs = getattr(self, "activation_checkpointing_kwargs", None) or getattr(
            self, "gradient_checkpointing_kwargs", None)
        if isinstance(kwargs, dict) and kwargs.get("use_reentrant"):
            raise ConfigError("Vaccine needs non-reentrant activation checkpointing (pass 1 uses torch.autograd.grad); "
                              "set use_reentrant=False or leave it unset; allowed values: False")


@contextlib.contextmanager
def perturbed(model: nn.Module, eps: Sequence[torch.Tensor] | Callable, *, layers_path: str | None = None,
              attn_name: str | None = None):
    """Pass 2: within the block every attention output gets ``eps[l]`` added; ``eps``: one tensor per layer or
    ``(layer_index, e_l) -> tensor``, evaluated once per layer and cached (a layer recomputed under gradient
    checkpointing gets the same value). Yields the cache ``{layer_index: eps_l}``."""
    used: dict[int, torch.Tensor] = {}

    def add_eps(i, e):
        d = used.get(i)
        if d is None:
            d = eps(i, e) if callable(eps) else eps[i]
            if d is None:
                return None
            if torch.broadcast_shapes(d.shape, e.shape) != e.shape:
                raise ConfigError(f"perturbation of layer {i} has shape {tuple(d.shape)}, attention output has "
                                  f"{tuple(e.shape)}")
            d = used[i] = d.detach().to(device=e.device, dtype=e.dtype)
        return e + d

    with attention_hooks(model, add_eps, layers_path=layers_path, attn_name=attn_name) as modules:
        if not callable(eps) and len(eps) != len(modules):
            raise ConfigError(f"got {len(eps)} perturbation tensors for {len(modules)} attention modules")
        yield used


@dataclass
class Perturbation:
    """Result of pass 1: ``eps`` (one detached tensor per layer), the global gradient norm and the clean loss."""
    eps: list[torch.Tensor]
    grad_norm: torch.Tensor
    loss: torch.Tensor


def perturbation_with_stats(model: nn.Module, inputs: dict, rho: float, *, loss_fn: Callable | None = None,
                            layers_path: str | None = None, attn_name: str | None = None, sync_norm: bool = False,
                            loss_scale: float | None = None, budget: str = "global") -> Perturbation:
    """Pass 1 of Algorithm 1 (module docstring): ``eps``, the global gradient norm and the clean loss.
    ``loss_fn(model, inputs)`` defaults to ``model(**inputs).loss``; ``sync_norm`` all-reduces the squared norm
    over the process group (DDP)."""
    check_param("rho", rho)
    deltas: dict[int, torch.Tensor] = {}

    def add_delta(i, e):  # e_l + delta_l, delta_l a zero leaf made on the first call and reused afterwards
        if i not in deltas:
            deltas[i] = torch.zeros_like(e, requires_grad=True)
        return e + deltas[i]

    loss_fn = loss_fn or default_loss
    no_sync = model.no_sync() if isinstance(model, nn.parallel.DistributedDataParallel) else contextlib.nullcontext()
    # Pass 1 needs no parameter gradient: with the trainable parameters frozen, autograd neither saves the inputs
    # weight gradients would need (one activation per LoRA/linear module) nor builds the graph below layer 0.
    trainable = [p for p in model.parameters() if p.requires_grad]
    try:
        with attention_hooks(model, add_delta, layers_path=layers_path, attn_name=attn_name) as modules:
            for p in trainable:
                p.requires_grad_(False)
            with no_sync, torch.enable_grad():
                loss = loss_fn(model, dict(inputs))
                missing = [i for i in range(len(modules)) if i not in deltas]
                if missing:
                    raise ConfigError(f"attention modules of layers {missing} were not called in the forward pass; "
                                      "check layers_path / attn_name")
                target = loss * loss_scale if loss_scale else loss
                order = [deltas[i] for i in range(len(modules))]
                grads = torch.autograd.grad(target, order, allow_unused=True)
    finally:
        for p in trainable:
            p.requires_grad_(True)
    grads = [torch.zeros_like(d) if g is None else g.detach() for g, d in zip(grads, order)]
    del order
    acc = torch.promote_types(grads[0].dtype, torch.float32)  # at least float32 for the norm
    layer_sq = torch.stack([g.to(acc).pow(2).sum() for g in grads])
    world = dist.get_world_size() if sync_norm and dist.is_available() and dist.is_initialized() else 1
    if world > 1:
        dist.all_reduce(layer_sq, op=dist.ReduceOp.SUM)
    raw = layer_sq.sum().sqrt()  # norm of the (possibly loss-scaled) gradients; the direction is scale-free
    ok = torch.isfinite(raw) & (raw > 0)
    if budget == "per_layer":  # rho / sqrt(L) along each layer's own gradient direction
        norms, size = layer_sq.sqrt(), rho / math.sqrt(len(grads))
    else:
        norms, size = raw.expand(len(grads)), rho
    ok = torch.isfinite(norms) & (norms > 0) & ok
    scale = torch.where(ok, size / torch.where(ok, norms, torch.ones_like(norms)), torch.zeros_like(norms))  # no sync
    deltas.clear()  # the zero tensors of pass 1 are no longer needed
    # scale in place: no second copy of all layers' gradients at the peak
    eps = [g.mul_(c.to(g.dtype)) if g.dtype == acc else (g.to(acc) * c).to(g.dtype) for g, c in zip(grads, scale)]
    # reported norm: gradient of the global loss, which DDP defines as the mean of the per-process losses
    norm = raw / (loss_scale or 1.0) / world
    return Perturbation(eps=eps, grad_norm=norm.detach(), loss=loss.detach())


def gaussian_sampler(rho: float, n_layers: int, std: float | None = None, world_size: int = 1,
                     generator: torch.Generator | None = None) -> Callable[[int, torch.Tensor], torch.Tensor]:
    """``eps`` for :func:`perturbed`: the Gaussian variant's noise (module docstring), shaped like each output."""
    def sample(i: int, e: torch.Tensor) -> torch.Tensor:
        sigma = std if std is not None else rho / math.sqrt(max(1, n_layers * e.numel() * world_size))
        noise = torch.randn(e.shape, device=e.device, dtype=torch.float32, generator=generator)
        return noise.mul_(sigma)

    return sample


_NO_STATS = {"grad_norm": 0.0, "eps_norm": 0.0, "clean_loss": 0.0, "micro": 0, "steps": 0, "last_step": None,
             "n_grad": 0}


class VaccineTrainer(Trainer):
    """``Trainer`` whose ``training_step`` is the Vaccine perturbed step (module docstring). Logs averages over
    perturbed micro-batches: ``vaccine/grad_norm`` (global norm of ``dL/de``), ``vaccine/eps_norm`` (this
    process's share; ``rho`` in one process), ``vaccine/clean_loss`` (pass 1, scaled like ``loss``) and
    ``vaccine/perturbed_steps``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(self.args, VaccineConfig):
            raise ConfigError(f"VaccineTrainer needs args=VaccineConfig(...), got {type(self.args).__name__}")
        self._vaccine_stats = dict(_NO_STATS)
        self.vaccine_pass1_calls = 0  # total number of pass-1 computations (for tests / diagnostics)
        self.eps_layer_sq = None  # per-layer sum over perturbed micro-batches of ||eps_l||^2

    def eps_layer_share(self) -> list[float]:
        """Each layer's share of the summed ||eps||^2 over training (where Vaccine spends its budget)."""
        if self.eps_layer_sq is None:
            return []
        total = float(self.eps_layer_sq.sum())
        return [float(x) / total if total > 0 else 0.0 for x in self.eps_layer_sq]

    def _rng_fork(self):
        dev = self.args.device
        if dev.type == "cpu":
            return torch.random.fork_rng(devices=[])
        try:
            return torch.random.fork_rng(devices=[dev.index or 0], device_type=dev.type)
        except Exception:  # device type without RNG forking support: accept different dropout masks
            return contextlib.nullcontext()

    def training_step(self, model: nn.Module, inputs: dict, num_items_in_batch=None) -> torch.Tensor:
        args = self.args
        if self.state.global_step % args.tau != 0:
            return super().training_step(model, inputs, num_items_in_batch)

        model.train()
        if callable(getattr(self.optimizer, "train", None)):
            self.optimizer.train()
        inputs = self._prepare_inputs(inputs)
        stats = self._vaccine_stats
        if args.perturbation == "gradient":
            scaler = getattr(self.accelerator, "scaler", None)
            loss_scale = float(scaler.get_scale()) if scaler is not None and scaler.is_enabled() else None

            # The cheaper response-only loss applies when the Trainer's loss is the plain causal-LM
            # loss; a label smoother, a custom loss function or a subclass's compute_loss keep the full path.
            plain_loss = (self.label_smoother is None and getattr(self, "compute_loss_func", None) is None
                          and type(self).compute_loss in (Trainer.compute_loss, AnswerOnlyLoss.compute_loss)
                          and "labels" in inputs)

            def loss_fn(m, batch):
                with self.compute_loss_context_manager():
                    if plain_loss:
                        loss = response_only_lm_loss(m, batch, num_items_in_batch) * token_average_scale(
                            self, num_items_in_batch)
                    else:
                        loss = self.compute_loss(m, batch, num_items_in_batch=num_items_in_batch)
                return loss.mean() if args.n_gpu > 1 else loss

            with self._rng_fork():
                pert = perturbation_with_stats(
                    model, inputs, args.rho, loss_fn=loss_fn, layers_path=args.layers_path,
                    attn_name=args.attn_name, sync_norm=self.accelerator.num_processes > 1, loss_scale=loss_scale,
                    budget=args.budget)
            self.vaccine_pass1_calls += 1
            eps = pert.eps
            clean = pert.loss if loss_is_scaled_for_ga(self, num_items_in_batch) else (
                pert.loss / self.current_gradient_accumulation_steps)
            stats["grad_norm"] += pert.grad_norm
            stats["clean_loss"] += clean
            stats["n_grad"] += 1
        else:
            n_layers = len(get_attention_modules(model, args.layers_path, args.attn_name))
            eps = gaussian_sampler(args.rho, n_layers, std=args.gaussian_std, world_size=self.accelerator.num_processes)

        with perturbed(model, eps, layers_path=args.layers_path, attn_name=args.attn_name) as used:
            loss = super().training_step(model, inputs, num_items_in_batch)
        if used:
            layer_sq = torch.stack([used[i].float().pow(2).sum() for i in sorted(used)]).detach()
            stats["eps_norm"] += layer_sq.sum().sqrt()
            self.eps_layer_sq = layer_sq if self.eps_layer_sq is None else self.eps_layer_sq + layer_sq
        stats["micro"] += 1
        if stats["last_step"] != self.state.global_step:
            stats["last_step"] = self.state.global_step
            stats["steps"] += 1
        return loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        stats = self._vaccine_stats
        if "loss" in logs and stats["micro"] > 0:
            logs["vaccine/eps_norm"] = float(stats["eps_norm"]) / stats["micro"]
            logs["vaccine/perturbed_steps"] = stats["steps"]
            if stats["n_grad"]:
                logs["vaccine/grad_norm"] = float(stats["grad_norm"]) / stats["n_grad"]
                logs["vaccine/clean_loss"] = float(stats["clean_loss"]) / max(1, stats["steps"])
            self._vaccine_stats = dict(_NO_STATS)
        # reliability (issue 10): a non-finite perturbation / hidden-gradient norm fails the run
        # (under fp16 an overflowing pass-1 norm is expected now and then; the loss scaler handles it)
        for key in ("vaccine/eps_norm", "vaccine/grad_norm"):
            if key in logs and not math.isfinite(logs[key]) and not self.args.fp16:
                raise DivergenceError(
                    f"Vaccine diverged at step {self.state.global_step}: {key}={logs[key]}. Training was stopped; "
                    f"do not use its weights. Fix: lower rho (now {self.args.rho:g}) or lr (now "
                    f"{self.args.learning_rate:g}).")
        super().log(logs, start_time)

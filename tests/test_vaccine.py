"""Mathematics of the Vaccine step (Algorithm 1, Eq. 3) on tiny random models."""

import math

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import Trainer, TrainerCallback, TrainingArguments

from vaccine_lib.errors import ConfigError
from vaccine_lib.hooks import get_attention_modules
from vaccine_lib.models import TINY_MODELS
from vaccine_lib.vaccine import (
    VaccineConfig,
    VaccineTrainer,
    gaussian_sampler,
    perturbation_with_stats,
    perturbed,
)

T = 10  # tokens per row


def make_rows(n, seed=0, vocab=400):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (n, T), generator=g)
    return {"input_ids": ids.tolist(), "attention_mask": [[1] * T] * n, "labels": ids.tolist()}


def batch(n=3, seed=0):
    rows = make_rows(n, seed)
    return {k: torch.tensor(v) for k, v in rows.items()}


def brute_force_grads(model, inputs):
    """dL/de_l, one layer at a time: replace that layer's attention output by a detached leaf, differentiate."""
    grads = []
    for module in get_attention_modules(model):
        holder = {}

        def hook(mod, args, out):
            leaf = out[0].detach().requires_grad_(True)
            holder["e"] = leaf
            return (leaf, *out[1:])

        handle = module.register_forward_hook(hook)
        try:
            loss = model(**inputs).loss
        finally:
            handle.remove()
        (g,) = torch.autograd.grad(loss, holder["e"])
        grads.append(g)
    return grads


def global_norm(tensors):
    return torch.stack([t.double().pow(2).sum() for t in tensors]).sum().sqrt().item()


class GradCapture(TrainerCallback):
    """Records the trainable parameters' .grad right before each optimizer step."""

    def __init__(self):
        self.grads = []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.grads.append({n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad})


def config(tmp_path, cls=VaccineConfig, **kw):
    base = dict(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=1, learning_rate=1e-3,
                max_grad_norm=0.0, lr_scheduler_type="constant", report_to=[], use_cpu=True, save_strategy="no",
                disable_tqdm=True, logging_steps=1, seed=0, dataloader_num_workers=0)
    base.update(kw)
    return cls(**base)


def attn_hooks_empty(model):
    return all(len(m._forward_hooks) == 0 for m in get_attention_modules(model))


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize("kw, msg", [
    (dict(rho=-0.1), "allowed range"),
    (dict(tau=0), "allowed range"),
    (dict(tau=1.5), "allowed range"),
    (dict(perturbation="uniform"), "allowed values"),
    (dict(gaussian_std=0.1), "gaussian"),
    (dict(perturbation="gaussian", gaussian_std=-1.0), "allowed range"),
    (dict(activation_checkpointing=True, activation_checkpointing_kwargs={"use_reentrant": True}), "reentrant"),
])
def test_config_validation(tmp_path, kw, msg):
    with pytest.raises(ConfigError, match=msg):
        VaccineConfig(output_dir=str(tmp_path), report_to=[], **kw)


def test_config_defaults_have_help(tmp_path):
    import dataclasses

    cfg = VaccineConfig(output_dir=str(tmp_path), report_to=[])
    assert (cfg.rho, cfg.tau, cfg.perturbation, cfg.gaussian_std) == (2.0, 1, "gradient", None)
    own = {f.name: f for f in dataclasses.fields(VaccineConfig)}
    for name in ("rho", "tau", "perturbation", "gaussian_std", "layers_path", "attn_name"):
        assert own[name].metadata.get("help")


# --------------------------------------------------------------------------- pass 1


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2", "tiny-opt"])
def test_perturbation_matches_brute_force(tiny_model, name):
    model = tiny_model(name).eval()
    inputs = batch()
    rho = 2.0
    eps = perturbation_with_stats(model, inputs, rho).eps
    grads = brute_force_grads(model, inputs)
    assert len(eps) == len(grads) == model.config.num_hidden_layers
    # direction: eps is parallel to the concatenated gradient (cosine 1), one global norm over all layers
    flat_e = torch.cat([e.flatten() for e in eps]).double()
    flat_g = torch.cat([g.flatten() for g in grads]).double()
    assert F.cosine_similarity(flat_e, flat_g, dim=0).item() == pytest.approx(1.0, abs=1e-6)
    assert global_norm(eps) == pytest.approx(rho, rel=1e-5)
    # per layer: eps_l = rho * g_l / ||g||, not a per-layer normalisation
    gn = global_norm(grads)
    for e, g in zip(eps, grads):
        torch.testing.assert_close(e, rho * g / gn, rtol=1e-4, atol=1e-7)
    # no parameter gradient is computed or accumulated
    assert all(p.grad is None for p in model.parameters())


def ce_loss(model, inputs):
    """Token-mean causal LM loss in the logits' dtype (transformers' own loss upcasts to float32 only)."""
    logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), inputs["labels"][:, 1:].flatten())


def test_perturbation_finite_differences(tiny_model):
    model = tiny_model("tiny-llama").double().eval()
    inputs = batch()
    info = perturbation_with_stats(model, inputs, rho=1.0, loss_fn=ce_loss)
    assert info.grad_norm.dtype == torch.float64
    g = torch.Generator().manual_seed(1)
    n_layers = len(info.eps)
    for layer in range(n_layers):
        u = torch.randn(info.eps[layer].shape, generator=g, dtype=torch.float64)
        u /= u.norm()
        h = 3e-3  # the double model still has float32 pieces (rotary tables): larger h, O(h^2) error

        def loss_at(sign):
            eps = [sign * h * u if i == layer else torch.zeros_like(u) for i in range(n_layers)]
            with torch.no_grad(), perturbed(model, eps):
                return ce_loss(model, inputs).item()

        fd = (loss_at(1) - loss_at(-1)) / (2 * h)
        expected = (info.eps[layer] * u).sum().item() * info.grad_norm.item()  # <g_l, u>
        assert fd == pytest.approx(expected, rel=5e-4, abs=1e-8)


def test_rho_zero_gives_zero_perturbation(tiny_model):
    eps = perturbation_with_stats(tiny_model("tiny-llama"), batch(), 0.0).eps
    assert all(torch.count_nonzero(e) == 0 for e in eps)


def test_zero_gradient_gives_zero_perturbation(tiny_model):
    model = tiny_model("tiny-llama")
    eps = perturbation_with_stats(model, batch(), 2.0, loss_fn=lambda m, b: 0.0 * m(**b).loss).eps
    assert all(torch.count_nonzero(e) == 0 for e in eps) and all(torch.isfinite(e).all() for e in eps)


def test_perturbed_adds_eps_and_removes_hooks(tiny_model):
    model = tiny_model("tiny-llama").eval()
    inputs = batch()
    modules = get_attention_modules(model)
    seen = []
    probe = [m.register_forward_hook(lambda mod, a, out: seen.append(out[0].detach().clone())) for m in modules]
    with torch.no_grad():
        model(**inputs)
        clean = seen[:]
        seen.clear()
        eps = [torch.full_like(c, 0.5 * (i + 1)) for i, c in enumerate(clean)]
        # probes registered first see the clean output; check the value the next module gets instead
        for p in probe:
            p.remove()
        with perturbed(model, eps):
            got = []
            after = [m.register_forward_hook(lambda mod, a, out: got.append(out[0].detach().clone())) for m in modules]
            model(**inputs)
            for h in after:
                h.remove()
    assert attn_hooks_empty(model)
    torch.testing.assert_close(got[0], clean[0] + eps[0])


def test_hooks_removed_after_exception(tiny_model):
    model = tiny_model("tiny-llama")

    def bad(i, e):
        if i == 1:
            raise RuntimeError("boom")
        return torch.zeros_like(e)

    with pytest.raises(RuntimeError, match="boom"):
        with perturbed(model, bad):
            model(**batch())
    assert attn_hooks_empty(model)
    with pytest.raises(RuntimeError, match="boom2"):
        perturbation_with_stats(model, batch(), 1.0, loss_fn=lambda m, b: (_ for _ in ()).throw(RuntimeError("boom2")))
    assert attn_hooks_empty(model)


# --------------------------------------------------------------------------- the trainer step


def one_step_grads(tmp_path, model, trainer_cls, args_cls, rows, **kw):
    cap = GradCapture()
    trainer = trainer_cls(model=model, args=config(tmp_path, args_cls, **kw), train_dataset=Dataset.from_dict(rows),
                          callbacks=[cap])
    trainer.train()
    return trainer, cap.grads


def assert_grads_of_perturbed_loss(grads, reference, inputs, eps):
    """``grads`` (name -> tensor) equal d/dparams of ``reference``'s loss with ``eps`` added; returns that loss."""
    params = dict(reference.named_parameters())
    with perturbed(reference, eps):
        loss = reference(**inputs).loss
    expected = dict(zip(params, torch.autograd.grad(loss, list(params.values()))))
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected[name], rtol=1e-4, atol=1e-6)
    return loss


def test_step_is_gradient_of_perturbed_loss(tiny_model, tmp_path):
    rows = make_rows(4)
    model = tiny_model("tiny-llama")
    reference = tiny_model("tiny-llama")  # same seed -> same weights
    trainer, grads = one_step_grads(tmp_path, model, VaccineTrainer, VaccineConfig, rows, rho=2.0)
    assert len(grads) == 1 and trainer.vaccine_pass1_calls == 1
    # independent computation: brute-force eps on the whole batch, loss with eps added, grad w.r.t. params
    inputs = {k: torch.tensor(v) for k, v in rows.items()}
    g = brute_force_grads(reference, inputs)
    gn = global_norm(g)
    loss = assert_grads_of_perturbed_loss(grads[0], reference, inputs, [2.0 * x / gn for x in g])
    # the logged loss is the perturbed loss, logged norms are as defined
    log = trainer.state.log_history[0]
    assert log["loss"] == pytest.approx(loss.item(), rel=1e-4)
    assert log["vaccine/eps_norm"] == pytest.approx(2.0, rel=1e-4)
    assert log["vaccine/grad_norm"] == pytest.approx(gn, rel=1e-4)
    with torch.no_grad():
        assert log["vaccine/clean_loss"] == pytest.approx(reference(**inputs).loss.item(), rel=1e-4)
    assert attn_hooks_empty(trainer.model)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])  # gpt2 has dropout: checks the RNG replay
def test_rho_zero_equals_sft(tiny_model, tmp_path, name):
    rows = make_rows(4)
    _, vac = one_step_grads(tmp_path / "v", tiny_model(name), VaccineTrainer, VaccineConfig, rows, rho=0.0)
    _, sft = one_step_grads(tmp_path / "s", tiny_model(name), Trainer, TrainingArguments, rows)
    for key in sft[0]:
        torch.testing.assert_close(vac[0][key], sft[0][key], rtol=1e-5, atol=1e-7)


def test_rho_changes_the_update(tiny_model, tmp_path):
    rows = make_rows(4)
    _, vac = one_step_grads(tmp_path / "v", tiny_model(), VaccineTrainer, VaccineConfig, rows, rho=2.0)
    _, sft = one_step_grads(tmp_path / "s", tiny_model(), Trainer, TrainingArguments, rows)
    diff = sum((vac[0][k] - sft[0][k]).abs().sum().item() for k in sft[0])
    assert diff > 1e-3


@pytest.mark.parametrize("tau, steps, ga, expected", [(1, 4, 1, 4), (3, 7, 1, 3), (2, 4, 2, 4), (10, 5, 1, 1)])
def test_tau_schedule(tiny_model, tmp_path, tau, steps, ga, expected):
    args = config(tmp_path, tau=tau, max_steps=steps, gradient_accumulation_steps=ga, per_device_train_batch_size=2)
    trainer = VaccineTrainer(model=tiny_model(), args=args, train_dataset=Dataset.from_dict(make_rows(8)))
    perturbed_at = []
    original = trainer.training_step

    def spy(model, inputs, num_items_in_batch=None):
        before = trainer.vaccine_pass1_calls
        out = original(model, inputs, num_items_in_batch)
        if trainer.vaccine_pass1_calls > before:
            perturbed_at.append(trainer.state.global_step)
        return out

    trainer.training_step = spy
    trainer.train()
    assert trainer.vaccine_pass1_calls == expected  # pass-1 calls count micro-batches
    assert all(s % tau == 0 for s in perturbed_at)
    assert attn_hooks_empty(trainer.model)


def test_gradient_accumulation_matches_sum_of_micro_batch_perturbed_grads(tiny_model, tmp_path):
    rows = make_rows(4)
    model, reference = tiny_model(), tiny_model()
    cap = GradCapture()
    args = config(tmp_path, per_device_train_batch_size=2, gradient_accumulation_steps=2)
    trainer = VaccineTrainer(model=model, args=args, train_dataset=Dataset.from_dict(rows), callbacks=[cap])
    micro = []
    original = trainer.training_step

    def spy(model, inputs, num_items_in_batch=None):
        micro.append({k: v.clone() for k, v in inputs.items()})
        return original(model, inputs, num_items_in_batch)

    trainer.training_step = spy
    trainer.train()
    assert len(micro) == 2 and len(cap.grads) == 1
    # expected: token-level mean over the accumulated batch; eps computed per micro-batch (its own global norm)
    n_tokens = sum(int((mb["labels"][:, 1:] != -100).sum()) for mb in micro)
    params = dict(reference.named_parameters())
    total = 0.0
    for mb in micro:
        g = brute_force_grads(reference, mb)
        gn = global_norm(g)
        with perturbed(reference, [2.0 * x / gn for x in g]):
            logits = reference(input_ids=mb["input_ids"], attention_mask=mb["attention_mask"]).logits
        total = total + F.cross_entropy(logits[:, :-1].flatten(0, 1), mb["labels"][:, 1:].flatten(), reduction="sum")
    expected = dict(zip(params, torch.autograd.grad(total / n_tokens, list(params.values()))))
    for name, grad in cap.grads[0].items():
        torch.testing.assert_close(grad, expected[name], rtol=1e-4, atol=1e-6)
    assert math.isfinite(trainer.state.log_history[0]["loss"])


def test_gradient_checkpointing_gives_the_same_step(tiny_model, tmp_path):
    rows = make_rows(4)
    _, plain = one_step_grads(tmp_path / "a", tiny_model(), VaccineTrainer, VaccineConfig, rows)
    trainer, ckpt = one_step_grads(tmp_path / "b", tiny_model(), VaccineTrainer, VaccineConfig, rows,
                                   activation_checkpointing=True)
    assert trainer.model.is_activation_checkpointing
    for key in plain[0]:
        torch.testing.assert_close(ckpt[0][key], plain[0][key], rtol=1e-5, atol=1e-7)


def test_bf16_autocast_runs(tiny_model, tmp_path):
    trainer = VaccineTrainer(model=tiny_model(), args=config(tmp_path, bf16=True, max_steps=2),
                             train_dataset=Dataset.from_dict(make_rows(8)))
    trainer.train()
    log = trainer.state.log_history[0]
    assert math.isfinite(log["loss"]) and log["vaccine/eps_norm"] == pytest.approx(2.0, rel=2e-2)


def test_hooks_removed_when_pass_two_raises(tiny_model, tmp_path):
    class Failing(VaccineTrainer):
        calls = 0

        def compute_loss(self, *a, **kw):
            Failing.calls += 1
            if Failing.calls == self.fail_at:
                raise RuntimeError(f"fail at {self.fail_at}")
            return super().compute_loss(*a, **kw)

    for fail_at in (1, 2):  # pass 1, pass 2
        Failing.calls = 0
        model = tiny_model()
        trainer = Failing(model=model, args=config(tmp_path), train_dataset=Dataset.from_dict(make_rows(4)))
        trainer.fail_at = fail_at
        with pytest.raises(RuntimeError, match=f"fail at {fail_at}"):
            trainer.train()
        assert attn_hooks_empty(model)


@pytest.mark.parametrize("name", TINY_MODELS)
def test_lora_every_family(tiny_model, tmp_path, name):
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=8, lora_alpha=4, lora_dropout=0.1, target_modules="all-linear", task_type="CAUSAL_LM")
    model = get_peft_model(tiny_model(name), lora)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    assert before
    args = config(tmp_path, max_steps=2, learning_rate=1e-2, per_device_train_batch_size=2)
    trainer = VaccineTrainer(model=model, args=args, train_dataset=Dataset.from_dict(make_rows(4)))
    trainer.train()
    changed = [n for n, p in model.named_parameters() if "lora_" in n and not torch.equal(p.detach(), before[n])]
    assert changed and all("lora_B" in n or "lora_A" in n for n in changed)
    assert any("lora_B" in n for n in changed)
    log = trainer.state.log_history[0]
    assert math.isfinite(log["loss"]) and log["vaccine/eps_norm"] == pytest.approx(2.0, rel=1e-3)
    assert attn_hooks_empty(model)


# --------------------------------------------------------------------------- Gaussian variant


def test_gaussian_sampler_distribution():
    e = torch.zeros(4, 64, 32)
    n_layers, rho = 3, 2.0
    sample = gaussian_sampler(rho, n_layers, generator=torch.Generator().manual_seed(0))
    eps = [sample(i, e) for i in range(n_layers)]
    n = n_layers * e.numel()
    flat = torch.cat([x.flatten() for x in eps])
    assert global_norm(eps) == pytest.approx(rho, rel=0.03)  # concentrates at rho
    assert flat.std().item() == pytest.approx(rho / math.sqrt(n), rel=0.03)
    assert abs(flat.mean().item()) < 4 * rho / n
    fixed = gaussian_sampler(rho, n_layers, std=0.3, generator=torch.Generator().manual_seed(0))(0, e)
    assert fixed.std().item() == pytest.approx(0.3, rel=0.03)


def test_gaussian_variant_has_no_pass_one(tiny_model, tmp_path, monkeypatch):
    import vaccine_lib.vaccine as vac

    def forbidden(*a, **k):
        raise AssertionError("pass 1 must not run for the Gaussian variant")

    monkeypatch.setattr(vac, "perturbation_with_stats", forbidden)
    grad_calls = []
    real_grad = torch.autograd.grad
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **k: grad_calls.append(1) or real_grad(*a, **k))
    trainer = VaccineTrainer(model=tiny_model(), args=config(tmp_path, perturbation="gaussian", max_steps=2),
                             train_dataset=Dataset.from_dict(make_rows(8)))
    trainer.train()
    assert trainer.vaccine_pass1_calls == 0 and not grad_calls
    log = trainer.state.log_history[0]
    # N = 2 layers * 4 rows * 10 tokens * 32 = 2560 coordinates: ||eps|| = rho within a few percent
    assert log["vaccine/eps_norm"] == pytest.approx(2.0, rel=0.1)
    assert "vaccine/grad_norm" not in log
    assert attn_hooks_empty(trainer.model)


def test_loss_scale_does_not_change_the_perturbation(tiny_model):
    """fp16 path: the pass-1 loss is multiplied by the grad scaler's scale; eps and the logged norm are unchanged."""
    model = tiny_model("tiny-llama")
    plain = perturbation_with_stats(model, batch(), 2.0)
    scaled = perturbation_with_stats(model, batch(), 2.0, loss_scale=65536.0)
    assert scaled.grad_norm.item() == pytest.approx(plain.grad_norm.item(), rel=1e-5)
    for a, b in zip(plain.eps, scaled.eps):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


# --------------------------------------------------------------------------- cheaper pass 1 (response-only head)


def masked_rows(n=4, seed=0, prompt=4, pad=3):
    """Rows shaped like SFT data: prompt positions and right padding carry label -100."""
    rows = make_rows(n, seed)
    for i in range(n):
        cut = prompt + (i % 2)
        rows["labels"][i] = [-100] * cut + rows["labels"][i][cut:]
        if i == n - 1:  # one right-padded row
            rows["labels"][i][-pad:] = [-100] * pad
            rows["attention_mask"][i][-pad:] = [0] * pad
    return rows


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2", "tiny-opt", "tiny-gemma"])
@pytest.mark.parametrize("num_items", [None, 17])
def test_response_only_loss_equals_full_loss_and_hidden_grads(tiny_model, name, num_items):
    from vaccine_lib.losses import default_loss, response_only_lm_loss

    model = tiny_model(name)
    model.eval()  # same dropout masks in both computations
    inputs = {k: torch.tensor(v) for k, v in masked_rows().items()}
    full_kw = dict(inputs, num_items_in_batch=num_items) if num_items else inputs
    full = default_loss(model, full_kw)
    cheap = response_only_lm_loss(model, inputs, num_items)
    torch.testing.assert_close(cheap, full, rtol=1e-5, atol=1e-6)
    e_full = perturbation_with_stats(model, full_kw, 1.0).eps
    e_cheap = perturbation_with_stats(model, inputs, 1.0,
                                      loss_fn=lambda m, b: response_only_lm_loss(m, b, num_items)).eps
    for a, b in zip(e_cheap, e_full):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_step_with_masked_labels_is_gradient_of_perturbed_loss(tiny_model, tmp_path):
    """The trainer's (response-only) pass 1 still yields the brute-force perturbation on SFT-shaped data."""
    rows = masked_rows()
    model, reference = tiny_model("tiny-llama"), tiny_model("tiny-llama")
    _, grads = one_step_grads(tmp_path, model, VaccineTrainer, VaccineConfig, rows, rho=2.0)
    inputs = {k: torch.tensor(v) for k, v in rows.items()}
    g = brute_force_grads(reference, inputs)
    assert_grads_of_perturbed_loss(grads[0], reference, inputs, [2.0 * x / global_norm(g) for x in g])


def test_per_layer_budget_gives_each_layer_rho_over_sqrt_layers(tiny_model):
    """budget='per_layer': eps_l = rho / sqrt(L) * g_l / ||g_l|| (the even split ablation); total norm still rho."""
    model, inputs = tiny_model("tiny-llama"), batch()
    g = brute_force_grads(tiny_model("tiny-llama"), inputs)
    eps = perturbation_with_stats(model, inputs, 2.0, budget="per_layer").eps
    for e, gl in zip(eps, g):
        torch.testing.assert_close(e, 2.0 / math.sqrt(len(g)) * gl / gl.norm(), rtol=1e-4, atol=1e-7)
    assert global_norm(eps) == pytest.approx(2.0, rel=1e-5)
    # the global budget (Eq. 3) is unchanged by the new argument
    glob = perturbation_with_stats(tiny_model("tiny-llama"), inputs, 2.0).eps
    gn = global_norm(g)
    for e, gl in zip(glob, g):
        torch.testing.assert_close(e, 2.0 * gl / gn, rtol=1e-4, atol=1e-7)


def test_trainer_records_each_layers_share_of_the_budget(tiny_model, tmp_path):
    rows = make_rows(4)
    trainer, _ = one_step_grads(tmp_path, tiny_model("tiny-llama"), VaccineTrainer, VaccineConfig, rows, rho=2.0)
    share = trainer.eps_layer_share()
    assert len(share) == 2 and sum(share) == pytest.approx(1.0) and all(s >= 0 for s in share)
    with pytest.raises(ConfigError, match="budget"):
        VaccineConfig(output_dir=str(tmp_path), budget="uneven", use_cpu=True)


@pytest.mark.parametrize("ga", [1, 2])
def test_answer_only_trainer_takes_the_same_step_as_the_plain_trainer(tiny_model, tmp_path, ga):
    """AnswerOnlyLoss (issue 17: output layer on answer tokens only) gives the Trainer's gradients, also under GA."""
    from vaccine_lib.losses import AnswerOnlyLoss

    class AnswerOnlyTrainer(AnswerOnlyLoss, Trainer):
        pass

    rows = masked_rows()
    kw = dict(gradient_accumulation_steps=ga, per_device_train_batch_size=len(rows["input_ids"]) // ga)
    _, cheap = one_step_grads(tmp_path / "a", tiny_model("tiny-llama"), AnswerOnlyTrainer, TrainingArguments, rows, **kw)
    _, full = one_step_grads(tmp_path / "f", tiny_model("tiny-llama"), Trainer, TrainingArguments, rows, **kw)
    for key in full[0]:
        torch.testing.assert_close(cheap[0][key], full[0][key], rtol=1e-4, atol=1e-6)  # float sums in another order


def test_alignment_stage_takes_the_budget_and_keeps_old_keys(tmp_path):
    """AlignConfig.budget reaches VaccineConfig; 'global' (the paper's) enters no key, 'per_layer' does."""
    from vaccine_lib.config import AlignConfig
    from vaccine_lib.stages import align_key, trainer_setup

    glob = AlignConfig(model="tiny-llama", method="vaccine", device="cpu")
    even = glob.with_(budget="per_layer")
    assert "budget" not in glob.effective() and even.effective()["budget"] == "per_layer"
    assert align_key(even) != align_key(glob)
    assert trainer_setup(even, tmp_path)[0].budget == "per_layer"
    assert "budget" not in glob.with_(method="sft", budget="per_layer").effective()

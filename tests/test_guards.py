"""Divergence is never cached as a result: non-finite training values fail the stage, with the parameter to lower.

Tiny random models (2 layers, hidden 32) with LoRA; every diverging run must raise DivergenceError
from inside ``trainer.train()`` and leave the output folder without a single file.
"""

import math
from types import SimpleNamespace

import pytest
import torch
from datasets import Dataset
from transformers import Trainer, TrainingArguments

from vaccine_lib.baselines import EWCConfig, EWCTrainer, KLConfig, KLTrainer
from vaccine_lib.errors import ConfigError, DivergenceError, VaccineError
from vaccine_lib.evaluation.metrics import DegenerateGenerationWarning, harmful_score, is_degenerate
from vaccine_lib import guards
from vaccine_lib.guards import FiniteGuard, check_finite_weights, divergence_message
from conftest import trainable_parameters
from vaccine_lib.lora import add_lora
from vaccine_lib.config import RANGES
from vaccine_lib.vaccine import VaccineConfig, VaccineTrainer

RHO_MAX = RANGES["rho"][1]


def _dataset(n=8, length=8):
    g = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(n):
        ids = torch.randint(5, 200, (length,), generator=g).tolist()
        rows.append({"input_ids": ids, "attention_mask": [1] * length, "labels": list(ids)})
    return Dataset.from_list(rows)


def _args(cls, tmp_path, **kw):
    base = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, max_steps=4, logging_steps=1,
                save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True, dataloader_num_workers=0)
    return cls(**{**base, **kw})


def _files(path):
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.exists() else []


@pytest.fixture
def lora_model(tiny_model):
    return lambda: add_lora(tiny_model("tiny-llama"), r=4, alpha=8, dropout=0.0)


def test_error_hierarchy():
    assert issubclass(DivergenceError, VaccineError) and issubclass(DivergenceError, FloatingPointError)


def test_huge_lr_fails_the_align_stage_before_anything_is_written(lora_model, tmp_path):
    trainer = Trainer(model=lora_model(), args=_args(TrainingArguments, tmp_path, learning_rate=1e9),
                      train_dataset=_dataset(), callbacks=[FiniteGuard(stage="align")])
    with pytest.raises(DivergenceError) as info:
        trainer.train()
    msg = str(info.value)
    assert msg.startswith("align stage diverged at step ")
    assert "lower lr (now 1e+09)" in msg and "Training was stopped; do not use its weights" in msg
    assert "rho" not in msg  # plain SFT has no rho to lower
    assert trainer.state.global_step < 4  # stopped at the first non-finite step
    assert _files(tmp_path) == []


def test_diverged_stage_is_never_cached(lora_model, tmp_path):
    """A stage trained inside atomic_save_dir (as the pipeline does): divergence leaves no folder, no temp."""
    from vaccine_lib.atomic import atomic_save_dir

    def stage(tmp):
        model = lora_model()
        trainer = Trainer(model=model, args=_args(TrainingArguments, tmp, learning_rate=1e9), train_dataset=_dataset(),
                          callbacks=[FiniteGuard(stage="align")])
        trainer.train()
        check_finite_weights(model, stage="align", args=trainer.args)
        model.save_pretrained(str(tmp / "adapter"))

    with pytest.raises(DivergenceError, match="align stage diverged"):
        atomic_save_dir(tmp_path / "stages" / "align-abc", stage)
    assert list((tmp_path / "stages").iterdir()) == []


def test_guard_is_silent_on_a_healthy_run(lora_model, tmp_path):
    model = lora_model()
    before = {n: p.detach().clone() for n, p in trainable_parameters(model).items()}
    trainer = Trainer(model=model, args=_args(TrainingArguments, tmp_path, learning_rate=1e-3),
                      train_dataset=_dataset(), callbacks=[FiniteGuard(stage="align")])
    trainer.train()
    check_finite_weights(model, stage="align")
    assert trainer.state.global_step == 4
    assert any(not torch.equal(before[n], p) for n, p in trainable_parameters(model).items())


def test_vaccine_rho_out_of_range_is_rejected_by_the_config(tmp_path):
    for rho in (1e30, float("inf"), float("nan"), -1.0):
        with pytest.raises(ConfigError, match=r"rho=.* allowed range: \[0, 1000\]"):
            _args(VaccineConfig, tmp_path, rho=rho)
    assert _args(VaccineConfig, tmp_path, rho=RHO_MAX).rho == RHO_MAX
    with pytest.raises(ConfigError, match="gaussian_std"):
        _args(VaccineConfig, tmp_path, perturbation="gaussian", gaussian_std=1e30)
    assert _files(tmp_path) == []


def test_vaccine_divergence_names_rho_and_lr(lora_model, tmp_path):
    trainer = VaccineTrainer(model=lora_model(), args=_args(VaccineConfig, tmp_path, learning_rate=1e9, rho=RHO_MAX),
                             train_dataset=_dataset(), callbacks=[FiniteGuard(stage="align")])
    with pytest.raises(DivergenceError) as info:
        trainer.train()
    assert "lower lr (now 1e+09) or rho (now 1000)" in str(info.value)
    assert _files(tmp_path) == []


def test_vaccine_nonfinite_perturbation_norm_fails_even_without_the_guard(lora_model, tmp_path):
    trainer = VaccineTrainer(model=lora_model(), args=_args(VaccineConfig, tmp_path, rho=2.0), train_dataset=_dataset())
    trainer._vaccine_stats.update(eps_norm=float("inf"), grad_norm=1.0, micro=1, steps=1, n_grad=1)
    with pytest.raises(DivergenceError, match=r"vaccine/eps_norm=inf.*lower rho \(now 2\)"):
        trainer.log({"loss": 1.0})
    trainer._vaccine_stats.update(eps_norm=2.0, grad_norm=float("nan"), micro=1, steps=1, n_grad=1)
    with pytest.raises(DivergenceError, match="vaccine/grad_norm=nan"):
        trainer.log({"loss": 1.0})


def test_ewc_and_kl_weights_are_bounded(tmp_path):
    with pytest.raises(ConfigError, match=r"ewc_lambda=1e\+38 is out of range; allowed range: \[0, 1000000000000.0\]"):
        _args(EWCConfig, tmp_path, ewc_lambda=1e38)
    with pytest.raises(ConfigError, match=r"kl_weight=1e\+38 is out of range; allowed range: \[0, 1000.0\]"):
        _args(KLConfig, tmp_path, kl_weight=1e38)
    assert _args(EWCConfig, tmp_path, ewc_lambda=1e9).ewc_lambda == 1e9  # the paper's value stays allowed
    assert _files(tmp_path) == []


def test_ewc_overflow_names_ewc_lambda(lora_model, tmp_path):
    model = lora_model()
    fisher = {n: torch.full_like(p, 1e30) for n, p in trainable_parameters(model).items()}  # penalty overflows
    trainer = EWCTrainer(model=model, args=_args(EWCConfig, tmp_path, learning_rate=1e-2, ewc_lambda=1e12),
                         train_dataset=_dataset(), fisher=fisher, callbacks=[FiniteGuard(stage="finetune")])
    with pytest.raises(DivergenceError) as info:
        trainer.train()
    msg = str(info.value)
    assert msg.startswith("finetune stage diverged") and "ewc_lambda (now 1e+12)" in msg and "kl_weight" not in msg
    assert _files(tmp_path) == []


def test_kl_overflow_names_kl_weight(lora_model, tiny_model, tmp_path):
    ref = tiny_model("tiny-llama")
    with torch.no_grad():
        ref.get_output_embeddings().weight.mul_(1e38)  # reference logits overflow: KL is NaN
    trainer = KLTrainer(model=lora_model(), args=_args(KLConfig, tmp_path, kl_weight=1.0), ref_model=ref,
                        train_dataset=_dataset(), callbacks=[FiniteGuard(stage="finetune")])
    with pytest.raises(DivergenceError, match=r"lower lr \(now 5e-05\) or kl_weight \(now 1\)"):
        trainer.train()
    assert _files(tmp_path) == []


def test_check_finite_weights_names_the_tensor(lora_model):
    model = lora_model()
    check_finite_weights(model, stage="align")
    name, p = next(iter(trainable_parameters(model).items()))
    with torch.no_grad():
        p.view(-1)[0] = float("nan")
    with pytest.raises(DivergenceError, match=r"1 of \d+ trained weight tensors hold inf/NaN"):
        check_finite_weights(model, stage="align")


def test_logged_values_and_fp16_patience(monkeypatch):
    monkeypatch.setattr(guards, "FP16_PATIENCE", 2)
    guard = FiniteGuard(stage="finetune")
    state = SimpleNamespace(global_step=7)
    args = SimpleNamespace(learning_rate=0.5, fp16=False)
    guard.on_log(args, state, None, logs={"loss": 1.0, "grad_norm": 0.3, "epoch": 1})
    for key in ("loss", "grad_norm", "ewc_penalty", "kl"):
        with pytest.raises(DivergenceError, match=rf"step 7: logged {key}=nan.*Fix: lower lr \(now 0.5\) and rerun"):
            guard.on_log(args, state, None, logs={key: math.nan})
    model = torch.nn.Linear(2, 2)
    model.weight.grad = torch.full_like(model.weight, math.inf)
    fp16 = SimpleNamespace(learning_rate=0.5, fp16=True)
    guard.on_pre_optimizer_step(fp16, state, None, model=model)  # the loss scaler skips these steps
    guard.on_pre_optimizer_step(fp16, state, None, model=model)
    with pytest.raises(DivergenceError, match="gradient tensors hold inf/NaN"):
        guard.on_pre_optimizer_step(fp16, state, None, model=model)
    assert divergence_message("x", "y", args=SimpleNamespace(learning_rate=0.1)) == \
        "x stage diverged: y. Training was stopped; do not use its weights. Fix: lower lr (now 0.1) and rerun."


# --------------------------------------------------------------------------- degenerate generations

@pytest.mark.parametrize("answer,flag", [
    ("", False), ("I can't help with that.", False), ("positive", False), ("!!!!!!", True), ("a a a", True),
    ("positive positive positive positive", True), ("#1. 1. 1. 1. 1. 1. 1. 1.", True),
    ("Sure. Sure. Sure. Sure. Sure. Sure. Sure. Sure. Sure.", True),
    ("Step one: mix flour and water, then knead the dough for ten minutes until smooth.", False),
])
def test_is_degenerate(answer, flag):
    assert is_degenerate(answer) is flag


def test_nan_model_is_reported_degenerate_not_safe(tiny_model, tokenizer):
    """The issue's case: a NaN model generates nothing, which the judge scores harmless (HS 0)."""
    model = tiny_model("tiny-llama")
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))

    class Judge:
        def judge(self, questions, answers):
            return [SimpleNamespace(harmful=False, refusal=False, label_only=False, score=0.0) for _ in answers]

    with pytest.warns(DegenerateGenerationWarning, match="does not mean the model is safe"):
        res = harmful_score(model, tokenizer, ["How do I pick a lock?", "Say hi", "Tell me a secret"], Judge(),
                            max_new_tokens=6, progress=False)
    m = res.metrics()
    assert m["hs"] == 0.0 and m["empty_rate"] + m["degenerate_rate"] == 100.0
    assert m["degenerate"].startswith("degenerate generations: 100% of the answers")
    assert {"empty", "degenerate", "words"} <= set(res.generations[0])

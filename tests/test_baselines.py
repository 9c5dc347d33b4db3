"""EWC / KL / Vlguard: reduce to SFT at zero strength, penalties equal hand computations."""

import copy

import pytest
import torch
from datasets import Dataset
from transformers import Trainer, TrainingArguments

from vaccine_lib.baselines import (EWCConfig, EWCTrainer, KLConfig, KLTrainer, compute_fisher, ewc_penalty, token_kl,
                                   vlguard_mix)
from conftest import trainable_parameters
from vaccine_lib.lora import add_lora


def _batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 200, (3, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[2, 5:] = 0
    labels = ids.clone()
    labels[:, :3] = -100
    labels[mask == 0] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _lora_model(tiny_model, randomize_b=True):
    model = add_lora(tiny_model(), r=4, alpha=8, dropout=0.0)
    if randomize_b:
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def _args(cls, tmp_path, **kw):
    return cls(output_dir=str(tmp_path), report_to="none", save_strategy="no", use_cpu=True,
               dataloader_num_workers=0, per_device_train_batch_size=3, **kw)


def _loss_and_grads(trainer, model, batch):
    model.zero_grad()
    loss = trainer.compute_loss(model, dict(batch))
    loss.backward()
    return float(loss.detach()), {n: p.grad.clone() for n, p in trainable_parameters(model).items()}


def _assert_same(a, b):
    assert a[0] == pytest.approx(b[0], rel=1e-6, abs=1e-7)
    for n in a[1]:
        torch.testing.assert_close(a[1][n], b[1][n], atol=1e-7, rtol=1e-5)


def test_ewc_lambda_zero_is_sft(tiny_model, tmp_path):
    base = _lora_model(tiny_model)
    m1, m2 = copy.deepcopy(base), copy.deepcopy(base)
    fisher = {n: torch.rand_like(p) for n, p in trainable_parameters(m2).items()}
    with torch.no_grad():  # move away from the anchor so the penalty would be non-zero
        anchor = {n: p.detach().clone() + 0.05 for n, p in trainable_parameters(m2).items()}
    sft = Trainer(model=m1, args=_args(TrainingArguments, tmp_path))
    ewc = EWCTrainer(model=m2, args=_args(EWCConfig, tmp_path, ewc_lambda=0.0), fisher=fisher, anchor=anchor)
    _assert_same(_loss_and_grads(sft, m1, _batch()), _loss_and_grads(ewc, m2, _batch()))


def test_ewc_penalty_hand_computation(tiny_model, tmp_path):
    model = _lora_model(tiny_model)
    params = trainable_parameters(model)
    g = torch.Generator().manual_seed(2)
    fisher = {n: torch.rand(p.shape, generator=g) for n, p in params.items()}
    anchor = {n: p.detach().clone() for n, p in params.items()}
    trainer = EWCTrainer(model=model, args=_args(EWCConfig, tmp_path, ewc_lambda=1e3), fisher=fisher)
    with torch.no_grad():
        for p in params.values():
            p.add_(torch.randn(p.shape, generator=g) * 0.01)
    hand = sum(float((fisher[n] * (p.detach() - anchor[n]) ** 2).sum()) for n, p in params.items())
    assert float(ewc_penalty(model, fisher, anchor).detach()) == pytest.approx(hand, rel=1e-5)
    model.eval()
    with torch.no_grad():
        sft_loss = float(model(**_batch()).loss)
        total = float(trainer.compute_loss(model, _batch()))
    assert total - sft_loss == pytest.approx(1e3 / 2 * hand, rel=1e-4)


def test_fisher_is_mean_squared_gradient(tiny_model):
    model = _lora_model(tiny_model)
    b = _batch()
    singles = [{k: v[i:i + 1] for k, v in b.items()} for i in range(3)]
    fisher = compute_fisher(model, singles)
    params = trainable_parameters(model)
    assert all(p.grad is None for p in params.values())  # gradients cleared
    expected = {n: torch.zeros_like(p) for n, p in params.items()}
    model.eval()
    for s in singles:
        model.zero_grad()
        model(**s).loss.backward()
        for n, p in params.items():
            expected[n] += p.grad ** 2 / 3
    for n in params:
        torch.testing.assert_close(fisher[n], expected[n], rtol=1e-5, atol=1e-12)
    assert sum(float(f.sum()) for f in fisher.values()) > 0


def test_kl_weight_zero_is_sft(tiny_model, tmp_path):
    base = _lora_model(tiny_model)
    m1, m2 = copy.deepcopy(base), copy.deepcopy(base)
    sft = Trainer(model=m1, args=_args(TrainingArguments, tmp_path))
    kl = KLTrainer(model=m2, args=_args(KLConfig, tmp_path, kl_weight=0.0))
    _assert_same(_loss_and_grads(sft, m1, _batch()), _loss_and_grads(kl, m2, _batch()))


def test_kl_zero_at_init_and_hand_computation(tiny_model, tmp_path):
    fresh = _lora_model(tiny_model, randomize_b=False)  # LoRA B = 0: fine-tuned == aligned
    trainer = KLTrainer(model=fresh, args=_args(KLConfig, tmp_path, kl_weight=1.0))
    fresh.eval()
    with torch.no_grad():
        out = fresh(**_batch())
        assert float(token_kl(out.logits, trainer._ref_logits(fresh, _batch()), _batch()["labels"])) == pytest.approx(0, abs=1e-6)

    model = _lora_model(tiny_model)
    trainer = KLTrainer(model=model, args=_args(KLConfig, tmp_path, kl_weight=0.5))
    model.eval()
    b = _batch()
    with torch.no_grad():
        out = model(**b)
        with model.disable_adapter():
            ref = model(**b).logits
        hand, n = 0.0, 0
        for i in range(3):
            for t in range(6):
                if b["labels"][i, t + 1] == -100:
                    continue
                p = torch.softmax(out.logits[i, t].double(), -1)  # over the vocabulary
                q = torch.softmax(ref[i, t].double(), -1)
                hand += float((p * (p.log() - q.log())).sum())
                n += 1
        hand /= n
        assert hand > 0
        assert float(token_kl(out.logits, ref, b["labels"])) == pytest.approx(hand, rel=1e-4)
        total = float(trainer.compute_loss(model, dict(b)))
    assert total - float(out.loss) == pytest.approx(0.5 * hand, rel=1e-4)


def test_kl_trains(tiny_model, tmp_path):
    model = _lora_model(tiny_model, randomize_b=False)
    before = {n: p.detach().clone() for n, p in trainable_parameters(model).items()}
    b = _batch()
    rows = Dataset.from_dict({k: v.tolist() for k, v in b.items()}).with_format("torch")
    trainer = KLTrainer(model=model, args=_args(KLConfig, tmp_path, kl_weight=1.0, max_steps=2, learning_rate=1e-2,
                                                logging_steps=1, disable_tqdm=True), train_dataset=rows)
    trainer.train()
    assert any(not torch.equal(before[n], p) for n, p in trainable_parameters(model).items())
    assert any("kl" in e for e in trainer.state.log_history)


def _rows(n, kind):
    return Dataset.from_dict({"instruction": [f"{kind} q{i}" for i in range(n)], "input": [""] * n,
                              "output": [f"{kind} a{i}" for i in range(n)], "kind": [kind] * n,
                              **({"answer": ["x"] * n} if kind == "benign" else {})})


def test_vlguard_mix():
    user, align = _rows(10, "benign"), _rows(6, "refusal")
    assert vlguard_mix(user, align, 0, seed=1) is user  # zero mixed samples: plain SFT data
    mixed = vlguard_mix(user, align, 4, seed=1)
    assert len(mixed) == 14
    assert sorted(mixed["kind"]).count("refusal") == 4
    assert set(mixed.column_names) == {"instruction", "input", "output", "kind"}
    assert mixed["instruction"] == vlguard_mix(user, align, 4, seed=1)["instruction"]
    with pytest.raises(ValueError):
        vlguard_mix(user, align, 7)

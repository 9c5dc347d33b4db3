"""Embedding drift: zero for identical models, hand computation, callback logging."""

import math

import pytest
import torch
from torch.utils.data import Dataset

from vaccine_lib.drift import (DriftCallback, alignment_loss, hidden_embeddings, make_batches, model_drift,
                               pooled_embeddings)
from vaccine_lib.hooks import get_attention_modules

TEXTS = ["How do I pick a lock?", "I cannot help with that request, sorry.", "Tell me a joke"]


def _batch(tokenizer):
    b = make_batches(tokenizer, TEXTS, batch_size=8)[0]
    labels = b["input_ids"].clone()
    labels[:, :2] = -100
    labels[b["attention_mask"] == 0] = -100
    b["labels"] = labels
    return b


def test_self_drift_is_zero(tiny_model, tokenizer):
    model = tiny_model()
    e1 = hidden_embeddings(model, tokenizer, TEXTS)
    e2 = hidden_embeddings(model, tokenizer, TEXTS, batch_size=1)  # padding must not matter
    assert len(e1) == 2 and e1[0].shape[-1] == 32
    assert e1[0].shape[0] == sum(len(tokenizer(t)["input_ids"]) for t in TEXTS)
    torch.testing.assert_close(e1[0], e2[0], atol=1e-5, rtol=1e-4)
    same = model_drift(model, model, tokenizer, TEXTS)
    assert same["drift_sum_sq"] == 0 and same["drift_per_token"] == 0


def test_drift_matches_hand_computation(tiny_model, tokenizer):
    a, b = tiny_model(seed=0), tiny_model(seed=1)
    # by hand: per text, hook the attention modules ourselves, no padding
    sum_sq, norms, n_tok = 0.0, [], 0
    for text in TEXTS:
        ids = tokenizer(text, return_tensors="pt")["input_ids"]
        outs = {}
        for tag, m in (("a", a), ("b", b)):
            caps = []
            hs = [mod.register_forward_hook(lambda _m, _i, o: caps.append(o[0][0])) for mod in get_attention_modules(m)]
            with torch.no_grad():
                m.eval()
                m(ids)
            for h in hs:
                h.remove()
            outs[tag] = caps
        for la, lb in zip(outs["a"], outs["b"]):
            d = la - lb
            sum_sq += float((d ** 2).sum())
            norms.extend((d.norm(dim=-1) / math.sqrt(d.shape[-1])).tolist())
        n_tok += ids.shape[1]
    streamed = model_drift(a, b, tokenizer, TEXTS, batch_size=2)
    assert streamed["drift_sum_sq"] == pytest.approx(sum_sq, rel=1e-4)
    assert streamed["drift_per_token"] == pytest.approx(sum(norms) / len(norms), rel=1e-4)
    assert streamed["n_layers"] == 2 and streamed["n_tokens"] == n_tok


def test_response_only_and_alignment_loss(tiny_model, tokenizer):
    model = tiny_model()
    b = _batch(tokenizer)
    e = hidden_embeddings(model, None, b, response_only=True)
    assert e[0].shape[0] == int((b["labels"] != -100).sum())
    with torch.no_grad():
        expected = float(model(**b).loss)
    assert alignment_loss(model, [b]) == pytest.approx(expected, rel=1e-4)
    pooled = pooled_embeddings(model, tokenizer, TEXTS)
    assert pooled.shape == (3, 32)
    assert pooled_embeddings(model, tokenizer, TEXTS, layer="concat").shape == (3, 64)


class _Rows(Dataset):
    def __init__(self, batch):
        self.rows = [{k: v[i][batch["attention_mask"][i].bool()] for k, v in batch.items()}
                     for i in range(batch["input_ids"].shape[0])]

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def _collate(rows):
    n = max(len(r["input_ids"]) for r in rows)
    pad = {"input_ids": 0, "attention_mask": 0, "labels": -100}
    return {k: torch.stack([torch.nn.functional.pad(r[k], (0, n - len(r[k])), value=pad[k]) for r in rows])
            for k in pad}


def test_callback_logs_drift(tiny_model, tokenizer, tmp_path):
    from peft import get_peft_model, LoraConfig
    from transformers import Trainer, TrainingArguments

    model = get_peft_model(tiny_model(), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    b = _batch(tokenizer)
    cb = DriftCallback([b], every=2)
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=2, learning_rate=1e-2,
                             logging_steps=1, save_strategy="no", report_to="none", use_cpu=True,
                             dataloader_num_workers=0, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=_Rows(b), data_collator=_collate, callbacks=[cb])
    trainer.train()
    entries = [e for e in trainer.state.log_history if "drift_sum_sq" in e]
    assert [e["step"] for e in entries] == [0, 2, 4]
    for e in entries:
        assert {"drift_sum_sq", "drift_per_token", "align_loss", "step"} <= set(e)
    assert entries[0]["drift_sum_sq"] == 0
    assert entries[-1]["drift_sum_sq"] > 0

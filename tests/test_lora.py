"""LoRA helpers: generic targets, merge equivalence, Double/Single-LoRA round trips."""

import pytest
import torch

from conftest import trainable_parameters
from vaccine_lib.lora import add_lora, attention_linear_names, load_lora, merge_lora


def _ids():
    return torch.tensor([[1, 5, 9, 11, 3, 7]])


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-opt", "tiny-gpt2", "tiny-gptneox"])
def test_targets_found_generically(tiny_model, name):
    model = tiny_model(name)
    names = attention_linear_names(model)
    assert names
    peft_model = add_lora(model, r=4, alpha=4)
    trainable = trainable_parameters(peft_model)
    assert trainable and all("lora_" in n for n in trainable)


def test_llama_targets_are_qkvo(tiny_model):
    assert attention_linear_names(tiny_model("tiny-llama")) == ["k_proj", "o_proj", "q_proj", "v_proj"]


def test_defaults_match_paper(tiny_model):
    model = add_lora(tiny_model())
    cfg = model.peft_config["default"]
    assert (cfg.r, cfg.lora_alpha, cfg.lora_dropout) == (8, 4, 0.1)


def test_merge_equals_adapter_output(tiny_model):
    model = add_lora(tiny_model(), r=4, alpha=8, dropout=0.0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    model.eval()
    with torch.no_grad():
        before = model(_ids()).logits
        merged = merge_lora(model)
        after = merged(_ids()).logits
    assert not hasattr(merged, "peft_config")
    torch.testing.assert_close(before, after, atol=1e-5, rtol=1e-4)


def test_double_and_single_lora(tiny_model, tmp_path):
    model = add_lora(tiny_model(), r=4, alpha=4, dropout=0.0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    model.save_pretrained(str(tmp_path / "a"))
    model.eval()
    with torch.no_grad():
        ref = model(_ids()).logits
    # Single-LoRA: reload the same adapter, trainable
    single = load_lora(tiny_model(), tmp_path / "a", trainable=True)
    assert trainable_parameters(single)
    single.eval()
    with torch.no_grad():
        torch.testing.assert_close(single(_ids()).logits, ref, atol=1e-5, rtol=1e-4)
    # Double-LoRA: merge, add a fresh adapter (B = 0: same function), only it trains
    double = add_lora(merge_lora(load_lora(tiny_model(), tmp_path / "a")), r=4, alpha=8)
    double.eval()
    with torch.no_grad():
        torch.testing.assert_close(double(_ids()).logits, ref, atol=1e-5, rtol=1e-4)
    assert all("lora_" in n for n in trainable_parameters(double))

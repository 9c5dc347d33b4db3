"""Label-choice fine-tune accuracy (fa_choice): batched scoring equals a one-at-a-time log-likelihood."""

import torch

from vaccine_lib.evaluation.metrics import AccuracyResult, finetune_accuracy, label_choice


def loglik(model, tok, prompt, label):
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    lab = tok(label + tok.eos_token, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p + lab])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits.float(), -1)[0]
    return sum(logp[len(p) - 1 + k, t].item() for k, t in enumerate(lab))


def test_label_choice_matches_brute_force(tiny_model, tokenizer):
    model = tiny_model("tiny-llama", seed=3)
    prompts = ["Review: great fun.\n### Response:\n", "Bad.\n### Response:\n", "An utterly long and tedious film.\n"]
    labels = ("negative", "positive", "Sci/Tech")
    picked = label_choice(model, tokenizer, prompts, labels, batch_size=4)  # padding mixes rows of several lengths
    for prompt, k in zip(prompts, picked):
        scores = [loglik(model, tokenizer, prompt, lab) for lab in labels]
        assert k == max(range(len(labels)), key=scores.__getitem__)


def test_finetune_accuracy_reports_choice_for_label_tasks(tiny_model, tokenizer):
    model = tiny_model("tiny-llama", seed=3)
    items = [{"instruction": "Analyze the sentiment", "input": t, "output": o}
             for t, o in [("good", "positive"), ("bad", "negative"), ("fine", "positive")]]
    res = finetune_accuracy(model, tokenizer, "sst2", items, max_new_tokens=2, progress=False)
    assert isinstance(res, AccuracyResult) and 0 <= res.choice_accuracy <= 100
    assert res.metrics()["fa_choice"] == res.choice_accuracy
    assert {g["choice"] for g in res.generations} <= {"negative", "positive"}
    expected = 100 * sum(g["choice"] == it["output"] for g, it in zip(res.generations, items)) / 3
    assert res.choice_accuracy == expected

"""Batched generation: same tokens as one-at-a-time greedy decoding, order, errors, state restored."""

import pytest
import torch

from vaccine_lib.errors import ConfigError
from vaccine_lib.evaluation.generation import clean_answer, generate, generate_tokens

TEMPLATE = ("Below is an instruction that describes a task. Write a response that appropriately completes "
            "the request.\n\n### Instruction:\n{}\n\n### Response:\n")
QUESTIONS = [
    "Hi.", "What is the capital of France?", "Write a haiku about the sea and the moon at night.",
    "How do I bake bread?", "Name three primary colors.", "Explain photosynthesis " + "in great detail " * 6,
    "2+2?", "Translate 'good morning' into French, German, Spanish and Italian, one per line.",
    "Why is the sky blue?", "List the planets.", "Summarize the plot of Hamlet in two sentences.", "Ok",
]


def _prompts(n=len(QUESTIONS)):
    return [TEMPLATE.format(q) for q in QUESTIONS[:n]]


def identical_rate(model, tokenizer, prompts, max_new_tokens, batch_size):
    batched = generate_tokens(model, tokenizer, prompts, max_new_tokens, batch_size, progress=False)
    single = [generate_tokens(model, tokenizer, [p], max_new_tokens, 1, progress=False)[0] for p in prompts]
    return sum(b == s for b, s in zip(batched, single)) / len(prompts), batched, single


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_batched_matches_one_at_a_time(tiny_model, tokenizer, name):
    model = tiny_model(name, seed=1)
    rate, batched, _ = identical_rate(model, tokenizer, _prompts(), max_new_tokens=12, batch_size=5)
    print(f"{name}: identical-token rate batched vs one-at-a-time = {rate:.3f}")
    assert rate >= 0.95
    assert all(len(ids) <= 12 for ids in batched)


@pytest.mark.parametrize("name", ["tiny-gemma", "tiny-opt", "tiny-gptneox"])
def test_other_families_batched_matches_one_at_a_time(tiny_model, tokenizer, name):
    rate, _, _ = identical_rate(tiny_model(name, seed=2), tokenizer, _prompts(6), max_new_tokens=8, batch_size=4)
    assert rate >= 5 / 6


def _stop_after_token_multiple_of(model, tokenizer, k):
    """Hooks: eos wins whenever the current input token id is a multiple of k (row-local rule)."""
    last = {}

    def pre(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        last["ids"] = ids[:, -1]

    def post(module, args, logits):
        logits = logits.clone()
        rows = (last["ids"] % k == 0)
        logits[rows, -1, tokenizer.eos_token_id] = 1e4
        return logits

    model.register_forward_pre_hook(pre, with_kwargs=True)
    model.lm_head.register_forward_hook(post)


def test_finished_rows_dropped_same_tokens(tiny_model, tokenizer):
    model = tiny_model("tiny-llama", seed=3)
    _stop_after_token_multiple_of(model, tokenizer, 4)
    prompts = _prompts()
    assert all(tokenizer(p).input_ids[-1] % 4 for p in prompts)
    rate, batched, single = identical_rate(model, tokenizer, prompts, max_new_tokens=16, batch_size=6)
    lengths = [len(ids) for ids in batched]
    assert min(lengths) < max(lengths) <= 16, lengths  # rows finish at different steps
    assert rate == 1.0


def test_order_restored_and_text(tiny_model, tokenizer):
    model = tiny_model("tiny-llama")
    prompts = _prompts()
    ids = generate_tokens(model, tokenizer, prompts, 6, batch_size=4, progress=False)
    reversed_ids = generate_tokens(model, tokenizer, prompts[::-1], 6, batch_size=4, progress=False)
    assert ids == reversed_ids[::-1]
    texts = generate(model, tokenizer, prompts, max_new_tokens=6, batch_size=4, progress=False)
    assert len(texts) == len(prompts) and all(isinstance(t, str) for t in texts)
    assert texts[0] == clean_answer(tokenizer.decode(ids[0], skip_special_tokens=True))


def test_state_restored(tiny_model, tokenizer):
    model = tiny_model("tiny-llama")
    model.train()
    side = tokenizer.padding_side
    generate(model, tokenizer, _prompts(3), max_new_tokens=2, progress=False)
    assert tokenizer.padding_side == side
    assert model.training
    assert torch.is_grad_enabled()


def test_stops_at_eos(tiny_model, tokenizer):
    model = tiny_model("tiny-llama")

    def eos_wins(module, args, logits):  # make eos the argmax at every step
        logits = logits.clone()
        logits[..., tokenizer.eos_token_id] = 1e4
        return logits

    model.lm_head.register_forward_hook(eos_wins)
    out = generate_tokens(model, tokenizer, _prompts(3), max_new_tokens=8, progress=False)
    assert all(ids == [] for ids in out)


def test_clean_answer():
    assert clean_answer("  Paris.\n\n### Instruction:\nNext question") == "Paris."
    assert clean_answer("Sure\n### Response:\nagain") == "Sure"
    assert clean_answer("### Step 1: mix flour\n") == "### Step 1: mix flour"
    assert clean_answer("\n") == ""


@pytest.mark.parametrize("bad, match", [
    ([], "empty"),
    ("a single string", "single string"),
    (["ok", 3], "prompt 1 is a int"),
    (None, "list of strings"),
])
def test_bad_prompts(tiny_model, tokenizer, bad, match):
    with pytest.raises(ValueError, match=match):
        generate(tiny_model("tiny-llama"), tokenizer, bad, progress=False)


def test_bad_settings(tiny_model, tokenizer):
    model = tiny_model("tiny-llama")
    with pytest.raises(ConfigError, match="max_new_tokens"):
        generate(model, tokenizer, ["x"], max_new_tokens=0)
    with pytest.raises(ConfigError, match="batch_size"):
        generate(model, tokenizer, ["x"], batch_size=0)
    with pytest.raises(ConfigError, match="batch_size"):
        generate_tokens(model, tokenizer, ["x"], batch_size=True)


def test_tokenizer_without_eos_or_pad(tiny_model):
    from vaccine_lib.models import load_tokenizer

    tok = load_tokenizer("tiny-llama")
    model = tiny_model("tiny-llama")
    tok.pad_token = None  # falls back to eos for padding, then restored
    assert generate(model, tok, _prompts(2), max_new_tokens=2, progress=False)
    assert tok.pad_token is None
    tok.eos_token = None
    with pytest.raises(ConfigError, match="no eos token"):
        generate(model, tok, _prompts(2), max_new_tokens=2, progress=False)


@pytest.mark.slow
def test_embedded_smollm2_batched_matches_single():
    from vaccine_lib.models import load_model

    model, tok = load_model("smollm2-135m-instruct")
    prompts = [TEMPLATE.format(q) for q in ("What is the capital of France?", "Name three primary colors.",
                                            "Write one sentence about dogs.", "Hi.")]
    rate, batched, _ = identical_rate(model, tok, prompts, max_new_tokens=12, batch_size=4)
    print(f"smollm2: identical-token rate batched vs one-at-a-time = {rate:.3f}")
    assert rate >= 0.75  # 4 prompts: at most one floating-point tie allowed
    answers = generate(model, tok, prompts[:1], max_new_tokens=12, progress=False)
    assert "Paris" in answers[0]


def test_generation_bench_quick_on_tiny_model(monkeypatch):
    from benchmarks import generation as bench

    monkeypatch.setattr(bench, "_questions", lambda n: (list(bench.PLACEHOLDER_QUESTIONS[:n]), "placeholder_benign"))
    result = bench.run(model_name="tiny-llama", quick=True)
    assert result["bench"] == "generation" and result["prompt_source"] == "placeholder_benign"
    assert {"speedup", "identical_fraction", "seconds_batched", "seconds_one_at_a_time", "n_prompts",
            "max_new_tokens", "batch_size"} <= set(result)
    assert result["n_prompts"] == 8 and result["max_new_tokens"] == 16
    assert result["identical_fraction"] == 1.0
    assert len(set(bench.PLACEHOLDER_QUESTIONS)) == 64


def test_through_peft_wrapper(tiny_model, tokenizer):
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(tiny_model("tiny-llama"),
                                peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    rate, batched, _ = identical_rate(model, tokenizer, _prompts(6), max_new_tokens=6, batch_size=3)
    assert rate >= 5 / 6 and all(len(ids) <= 6 for ids in batched)

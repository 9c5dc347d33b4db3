"""Benchmark: batched evaluation generation vs the reference's one ``model.generate`` call per prompt (both
greedy with the KV cache on the same prompts): the speed-up and the share of prompts with identical tokens."""

import time

import torch

from vaccine_lib.data import harmful_eval_prompts
from vaccine_lib.evaluation.generation import generate_tokens
from vaccine_lib.evaluation.metrics import alpaca_prompt
from vaccine_lib.models import load_model

#: benign stand-ins, used only when the harmful evaluation split is not available
_VERBS = ("Explain", "Summarize", "Give three facts about", "Write a short poem about",
          "List common questions about", "Describe the history of", "Give a beginner's guide to",
          "Compare two views on")
_TOPICS = ("photosynthesis", "the water cycle", "bread baking", "plate tectonics", "the printing press",
           "honey bees", "prime numbers", "sailing")
PLACEHOLDER_QUESTIONS = tuple(f"{v} {t}." for v in _VERBS for t in _TOPICS)  # 64


def _questions(n: int) -> tuple[list[str], str]:
    try:
        rows = harmful_eval_prompts(n)
        questions = [r["instruction"] if isinstance(r, dict) else str(r) for r in rows]
        if len(questions) >= n:
            return questions[:n], "harmful_eval_prompts"
    except Exception:  # noqa: BLE001 - data not built / module not there: fall back, and say so
        pass
    return list(PLACEHOLDER_QUESTIONS[:n]), "placeholder_benign"


def reference_loop(model, tokenizer, prompts, max_new_tokens: int) -> list[list[int]]:
    """The reference's evaluation: one ``model.generate`` call per prompt, greedy, no padding."""
    eos = tokenizer.eos_token_id
    out = []
    model.eval()
    with torch.inference_mode():
        for prompt in prompts:
            enc = tokenizer(prompt, return_tensors="pt")
            seq = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                 pad_token_id=tokenizer.pad_token_id or eos, eos_token_id=eos)
            ids = seq[0, enc["input_ids"].shape[1]:].tolist()
            out.append(ids[:ids.index(eos)] if eos in ids else ids)
    return out


def run(model_name: str = "smollm2-135m-instruct", quick: bool = False, batch_size: int | None = None) -> dict:
    n, max_new_tokens = (8, 16) if quick else (64, 64)
    # CPU: decoding is compute-bound from about 16 rows; larger batches add padding and idle rows
    batch_size = batch_size or (8 if quick else 16)
    model, tok = load_model(model_name)
    questions, source = _questions(n)
    prompts = [alpaca_prompt(q) for q in questions]

    generate_tokens(model, tok, prompts[:2], max_new_tokens=2, batch_size=2, progress=False)  # warm-up
    reference_loop(model, tok, prompts[:1], 2)

    t0 = time.perf_counter()
    batched = generate_tokens(model, tok, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                              progress=False)
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    single = reference_loop(model, tok, prompts, max_new_tokens)
    t_single = time.perf_counter() - t0

    identical = sum(a == b for a, b in zip(batched, single)) / n
    return {"bench": "generation", "model": model_name, "quick": quick, "prompt_source": source, "n_prompts": n,
            "max_new_tokens": max_new_tokens, "batch_size": batch_size, "threads": torch.get_num_threads(),
            "device": str(next(model.parameters()).device), "seconds_batched": round(t_batched, 3),
            "seconds_one_at_a_time": round(t_single, 3), "speedup": round(t_single / t_batched, 2),
            "identical_fraction": round(identical, 4), "new_tokens_batched": sum(map(len, batched)),
            "new_tokens_one_at_a_time": sum(map(len, single))}

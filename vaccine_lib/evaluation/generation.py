"""Batched greedy generation for evaluation: ``model.generate`` (KV cache) on length-sorted, left-padded batches,
answers back in input order. The reference code generates one prompt at a time; a batch gives the same tokens up
to floating-point ties (tests measure the identical-token rate)."""

from contextlib import contextmanager

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig

from ..errors import ConfigError, check_int
from ..hardware import autocast_context
from ..hooks import eval_mode
from ..models import context_length

#: a model that keeps writing the template starts a new section; the answer ends at the first one
CONTINUATION_MARKERS = ("### Instruction", "### Input:", "### Response:")


def _check_prompts(prompts) -> list[str]:
    if isinstance(prompts, str):
        raise ValueError("prompts must be a list of strings, not a single string; wrap it: [prompt]")
    try:
        prompts = list(prompts)
    except TypeError as exc:
        raise ValueError(f"prompts must be a list of strings, got {type(prompts).__name__}") from exc
    if not prompts:
        raise ValueError("prompts is empty; pass at least one prompt string")
    bad = [i for i, p in enumerate(prompts) if not isinstance(p, str)]
    if bad:
        raise ValueError(f"prompts must all be strings; prompt {bad[0]} is a {type(prompts[bad[0]]).__name__} "
                         f"({len(bad)} non-string prompts in total). Format questions with "
                         "vaccine_lib.data.alpaca_prompt(instruction, input) first")
    return prompts


@contextmanager
def _generation_mode(model, tokenizer):
    """Left padding, a pad token and eval mode for the duration; restores all three afterwards."""
    old_side, old_pad = tokenizer.padding_side, tokenizer.pad_token
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    try:
        with eval_mode(model):
            yield
    finally:
        tokenizer.padding_side = old_side
        if old_pad is None:
            tokenizer.pad_token = None


def generate_tokens(model, tokenizer, prompts, max_new_tokens: int = 128, batch_size: int = 16,
                    progress: bool = True, autocast: str | None = None) -> list[list[int]]:
    """Greedy continuation token ids per prompt (eos and padding removed), in input order; ``autocast="bf16"``: under
    bf16 autocast. Longest prompt + ``max_new_tokens`` must fit the context (learned positions would fail mid-way)."""
    prompts = _check_prompts(prompts)
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens={max_new_tokens!r} must be a positive integer; allowed range: [1, context "
                          "- prompt length]", param="max_new_tokens")
    check_int("batch_size", batch_size, 1)
    eos_id, pad_id = getattr(tokenizer, "eos_token_id", None), getattr(tokenizer, "pad_token_id", None)
    if eos_id is None:
        raise ConfigError("the tokenizer has no eos token, so generation could never stop; set one, e.g. "
                          "tokenizer.eos_token = '</s>' (vaccine_lib.models.load_tokenizer does this check)")
    model_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    extra = model_eos if isinstance(model_eos, (list, tuple)) else [model_eos]
    stop_ids = list(dict.fromkeys([eos_id, *(e for e in extra if e is not None)]))  # the tokenizer's eos first
    gen_config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, use_cache=True,
                                  pad_token_id=eos_id if pad_id is None else pad_id, eos_token_id=stop_ids,
                                  temperature=None, top_p=None, top_k=None)
    # sorted by length (less padding); longest first, so the progress bar's estimate starts pessimistic
    lengths = [len(ids) for ids in tokenizer(prompts, add_special_tokens=True)["input_ids"]]
    context, longest = context_length(model), max(lengths)
    if context is not None and longest + max_new_tokens > context:
        allowed = f"[1, {context - longest}]" if context > longest else "none (the prompt alone fills the context)"
        raise ConfigError(f"max_new_tokens={max_new_tokens} does not fit the model's context of {context} tokens after "
                          f"the longest prompt ({longest} tokens); allowed range: {allowed}. Lower max_new_tokens or "
                          "use shorter prompts", param="max_new_tokens")
    order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
    out: list[list[int] | None] = [None] * len(prompts)
    with _generation_mode(model, tokenizer), torch.inference_mode(), autocast_context(autocast, model.device.type), \
            tqdm(total=len(prompts), desc="generate", disable=not progress, leave=False) as bar:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True).to(model.device)
            seqs = model.generate(**enc, generation_config=gen_config)
            for i, ids in zip(idx, seqs[:, enc["input_ids"].shape[1]:].tolist()):
                out[i] = ids[:next((k for k, t in enumerate(ids) if t in stop_ids), len(ids))]
            bar.update(len(idx))
    return out  # type: ignore[return-value]


def clean_answer(text: str) -> str:
    """The answer proper from decoded new tokens: cut where the model continues the template, stripped."""
    cuts = [k for k in (text.find(m) for m in CONTINUATION_MARKERS) if k >= 0]
    return text[:min(cuts, default=len(text))].strip()


def generate(model, tokenizer, prompts, max_new_tokens: int = 128, batch_size: int = 16,
             progress: bool = True, autocast: str | None = None) -> list[str]:
    """Greedy answers to full Alpaca-formatted prompts, in input order: the new tokens decoded, cut where the model
    continues the template (``"### Instruction"`` etc.) and stripped."""
    ids = generate_tokens(model, tokenizer, prompts, max_new_tokens, batch_size, progress, autocast)
    return [clean_answer(t) for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]

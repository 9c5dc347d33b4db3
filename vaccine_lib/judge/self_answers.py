"""The base model's own answers to the judge's training harmful requests: compliant positives in its style.

The classifier learned harm from pyrit's long answers and missed short, vague compliance. SmolLM2-135M-
Instruct, asked the harmful requests of the judge's *training* split (``training_data.split_indices``) in
the paper's Alpaca template, goes along with almost all of them in a few vague sentences: the style of the
fine-tuned models' answers. Its answers that neither refuse (``refusal.refuses``, ``compliant_in_form``)
nor fall off form (empty, label-only, too short, repeated) enter the training data as compliant (label 1).

Disjointness: only training-split requests (no question of the pyrit validation set), minus any request
that is an evaluation prompt (every StrongREJECT and AdvBench prompt, normalised). The hand-written set
shares none (checked in ``tests/test_judge_self_answers.py``). Generation is greedy (``SELF_TOKENS`` new
tokens, batches of ``BATCH_SIZE`` sorted by length) on the CPU, run once and cached by a key of the model,
the settings and the requests (``store``: arrays, never committed: the answers go along with harmful
requests). Cost (1 CPU thread): ~5 min for ~430 requests.
"""

from __future__ import annotations

import hashlib
import json
import random
import re

import numpy as np
import torch

from ..data.sources import advbench, helpful_pairs, strongreject
from ..data.templates import alpaca_prompt
from ..models import cache_dir, load_model
from .base import has_min_content, is_degenerate, is_label_only
from .negatives import NEUTRAL_FACTS, word_problem_texts
from .refusal import compliant_in_form, refuses
from .store import CacheInvalid, load_arrays, save_arrays
from .training_data import _norm, labelled_data, split_indices

SELF_MODEL = "smollm2-135m-instruct"
SELF_TOKENS = 48
BATCH_SIZE = 16
SELF_VERSION = 2
#: each request is asked with one of these style instructions (in turn), so the answers come in the styles
#: of short compliance (issue 20: "Sure!" openers, steps, lists, casual, vague or partial)
STYLES = ('Begin your answer with "Sure!" and keep it under 40 words.', "Answer as a short numbered list of steps.",
          "Answer casually, like a text message to a friend, in two sentences.",
          "Give only a brief, general outline without details.", "Answer in one short paragraph.")
#: seed of the reasoning_gym tasks and word problems the harmless self answers follow (the validation set
#: and the negatives use others)
BENIGN_SEED = 31
#: where an answer that keeps writing the Alpaca template ends
_TEMPLATE = re.compile(r"###\s*(?:Instruction|Input|Response)")


def _key(text: str) -> str:
    return _norm(text).lower().strip(" .?!\"'")


def training_requests(harmful: bool = True) -> list[str]:
    """The training split's harmful requests that are no evaluation prompt, sorted; ``harmful=False``: the
    everyday requests the base model's harmless answers follow (``BENIGN_REQUESTS``)."""
    data = labelled_data()
    train, _ = split_indices(data)
    if not harmful:
        everyday = {data.questions[i] for i in train if data.groups[i] == "pyrit-helpful" and data.questions[i]}
        facts = [f"Tell me about this: {f}" for f in NEUTRAL_FACTS]
        tasks = [r["instruction"] for r in helpful_pairs(96, seed=BENIGN_SEED)]
        return sorted(everyday) + facts + tasks + word_problem_texts(80, seed=BENIGN_SEED)
    evaluation = {_key(r["instruction"]) for r in strongreject() + advbench()}
    return sorted({data.questions[i] for i in train if data.labels[i] == 1 and data.questions[i]
                   and _key(data.questions[i]) not in evaluation})


def greedy_answers(model, tokenizer, requests, max_new_tokens: int = SELF_TOKENS,
                   batch_size: int = BATCH_SIZE) -> list[str]:
    """Greedy answers to ``requests`` in the Alpaca template (left-padded, length-sorted batches)."""
    prompts = [alpaca_prompt(r) for r in requests]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    order = sorted(range(len(prompts)), key=lambda i: len(tokenizer(prompts[i])["input_ids"]))
    out = [""] * len(prompts)
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    try:
        with torch.inference_mode():
            for s in range(0, len(order), batch_size):
                idx = order[s:s + batch_size]
                enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True)
                seqs = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                      pad_token_id=pad, temperature=None, top_p=None, top_k=None)
                texts = tokenizer.batch_decode(seqs[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
                for i, t in zip(idx, texts):
                    out[i] = _TEMPLATE.split(t)[0].strip()
    finally:
        tokenizer.padding_side = side
    return out


def self_answers(model_name: str = SELF_MODEL, harmful: bool = True) -> tuple[list[str], list[str], str]:
    """(requests, answers, digest): generated once, then read from the verified array cache."""
    requests = training_requests(harmful)
    prompts = [f"{r} {STYLES[k % len(STYLES)]}" for k, r in enumerate(requests)]
    digest = hashlib.sha256(json.dumps({"model": model_name, "tokens": SELF_TOKENS, "batch": BATCH_SIZE,
                                        "v": SELF_VERSION, "prompts": prompts}).encode()).hexdigest()[:16]
    base = cache_dir() / "judge" / f"self-answers-{model_name}-{digest}"
    try:
        arrays, _ = load_arrays(base, digest)
        return requests, arrays["answers"].tolist(), digest
    except CacheInvalid:
        pass
    model, tokenizer = load_model(model_name)
    answers = greedy_answers(model, tokenizer, prompts)
    save_arrays(base, {"requests": np.asarray(requests), "answers": np.asarray(answers)},
                {"digest": digest, "model": model_name, "n": len(answers)})
    return requests, answers, digest


def compliant(answer: str) -> bool:
    """The project's label for a self answer: on form and no refusal (phrase, grammar or refusal word)."""
    return (has_min_content(answer) and not is_label_only(answer) and not is_degenerate(answer)
            and not refuses(answer) and compliant_in_form(answer))


def self_training_rows(model_name: str = SELF_MODEL) -> tuple[list[str], list[str], list[int]]:
    """(requests, answers, labels): the compliant answers to harmful requests (1) and every answer to an
    everyday request (0), the latter paired with a harmful training request (every evaluation prompt is
    harmful, so a judge that reads the request gets no shortcut)."""
    hq, ha, _ = self_answers(model_name, harmful=True)
    keep = [k for k, a in enumerate(ha) if compliant(a)]
    _, ba, _ = self_answers(model_name, harmful=False)
    rng = random.Random(BENIGN_SEED)
    return ([hq[k] for k in keep] + [rng.choice(hq) for _ in ba], [ha[k] for k in keep] + list(ba),
            [1] * len(keep) + [0] * len(ba))

"""One harmful prompt's evaluation cost (issue 17: <= 0.25 s at 32 new tokens, judges included, 2 threads): greedy
generation per batch size in fp32 and bf16 autocast (share of answers equal to fp32's), then each default judge."""

import os
import tempfile
import time
from unittest import mock

import torch

from vaccine_lib.evaluation.generation import clean_answer, generate_tokens
from vaccine_lib.evaluation.metrics import alpaca_prompt
from vaccine_lib.hardware import autocast_context, resolve_autocast
from vaccine_lib.judge import get_judge
from vaccine_lib.models import load_model
from vaccine_lib.profiles import load_profile
from .generation import _questions

TARGET_S_PER_PROMPT = 0.25


def _timed(fn):
    t0 = time.perf_counter()
    return fn(), time.perf_counter() - t0


def run(model_name: str = "smollm2-135m-instruct", quick: bool = False) -> dict:
    n, new_tokens, batches = (8, 8, (8,)) if quick else (64, 32, (16, 64))
    ev = load_profile("default").eval
    model, tok = load_model(model_name)
    questions, source = _questions(n)
    prompts = [alpaca_prompt(q) for q in questions]
    generate_tokens(model, tok, prompts[:2], max_new_tokens=2, batch_size=2, progress=False)  # warm-up
    dtypes = ["fp32"] + (["bf16"] if resolve_autocast("auto", "cpu") == "bf16" else [])
    gen, ref = {}, None
    for dtype in dtypes:
        for b in batches:
            with autocast_context(dtype if dtype == "bf16" else None):
                ids, sec = _timed(lambda: generate_tokens(model, tok, prompts, max_new_tokens=new_tokens, batch_size=b,
                                                          progress=False))
            ref = ref or ids  # the first run: fp32 at the smallest batch
            gen[f"{dtype}_b{b}"] = {"s_per_prompt": round(sec / n, 4),
                                    "identical_to_fp32": round(sum(a == r for a, r in zip(ids, ref)) / n, 4)}
    answers = [clean_answer(t) for t in tok.batch_decode(ref, skip_special_tokens=True)]
    judges, loaded = {}, {}
    for name in dict.fromkeys([ev.judge, *ev.rejudge]):
        loaded[name], load_s = _timed(lambda: get_judge(name))
        loaded[name].judge(questions[:2], answers[:2])  # warm-up (below the embedding cache's batch size)
        judges[name] = {"load_s": round(load_s, 2)}
    # an empty cache folder while timing: the answers are new to the probe's embedding cache, as a fresh
    # evaluation's are; the ensemble then reuses the probe's embedding through it, as in the pipeline
    with tempfile.TemporaryDirectory() as tmp, mock.patch.dict(os.environ, {"VACCINE_LIB_CACHE": tmp}):
        for name, judge in loaded.items():
            _, sec = _timed(lambda: judge.judge(questions, answers))
            judges[name]["s_per_prompt"] = round(sec / n, 4)
    judge_s = sum(j["s_per_prompt"] for j in judges.values())
    best = min(gen, key=lambda k: gen[k]["s_per_prompt"])
    setting = f"{resolve_autocast(ev.autocast, 'cpu') or 'fp32'}_b{ev.batch_size}"  # as the default profile evaluates
    return {"bench": "eval_cost", "model": model_name, "quick": quick, "prompt_source": source, "n_prompts": n,
            "max_new_tokens": new_tokens, "threads": torch.get_num_threads(), "generation": gen, "judges": judges,
            "profile_setting": setting if setting in gen else None,
            "s_per_prompt_profile": round(gen.get(setting, gen[best])["s_per_prompt"] + judge_s, 4),
            "best_setting": best, "s_per_prompt_best": round(gen[best]["s_per_prompt"] + judge_s, 4),
            "target_s_per_prompt": TARGET_S_PER_PROMPT}

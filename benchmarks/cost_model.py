"""Where a stage's time goes (issue 17's cost model), measured in one process as the default profile runs it:
a fine-tuning step split into forward, backward and optimizer (the profile's autocast; the full-vocabulary loss, so
the answer-only head's saving shows in ``speed`` instead), the drift log's extra forward, generation split into
prefill and per-token decoding (the profile's evaluation batch and autocast), each judge on the answers just generated, model load, LoRA
merge, adapter save and a worker's import time. Stage totals come from the cold run (``runtime.csv``)."""

import subprocess
import sys
import tempfile
import time

import torch

from vaccine_lib.evaluation.generation import clean_answer, generate_tokens
from vaccine_lib.evaluation.metrics import alpaca_prompt
from vaccine_lib.hardware import autocast_context, resolve_autocast
from vaccine_lib.judge import get_judge
from vaccine_lib.lora import add_lora, merge_lora
from vaccine_lib.models import load_model
from vaccine_lib.profiles import load_profile

from .generation import _questions


def _best(fn, reps: int) -> float:
    """Least wall seconds of ``reps`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def run(model_name: str = "smollm2-135m-instruct", quick: bool = False) -> dict:
    P = load_profile("default")
    ft, ev = P.finetune, P.eval
    batch, seq, reps, n_prompts = (2, 32, 1, 4) if quick else (ft.batch_size, ft.max_length, 3, ev.batch_size)
    train_ac, eval_ac = resolve_autocast(ft.autocast, "cpu"), resolve_autocast(ev.autocast, "cpu")
    out = {"bench": "cost_model", "model": model_name, "quick": quick, "threads": torch.get_num_threads(),
           "train_autocast": train_ac or "fp32", "eval_autocast": eval_ac or "fp32", "batch": batch, "seq": seq}
    t0 = time.perf_counter()
    model, tok = load_model(model_name)
    out["load_model_s"] = round(time.perf_counter() - t0, 3)
    peft = add_lora(model, r=ft.lora_r, alpha=ft.lora_alpha, dropout=ft.lora_dropout, target_modules=ft.target_modules())
    ids = torch.randint(0, tok.vocab_size, (batch, seq))
    opt = torch.optim.AdamW([p for p in peft.parameters() if p.requires_grad], lr=ft.lr)
    parts = {"forward": 0.0, "backward": 0.0, "optimizer": 0.0}
    peft.train()
    for i in range(reps + 1):  # step 0 warms up
        times = []
        t = time.perf_counter()
        with autocast_context(train_ac):
            loss = peft(input_ids=ids, labels=ids).loss
        times.append(time.perf_counter() - t)
        t = time.perf_counter()
        loss.backward()
        times.append(time.perf_counter() - t)
        t = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
        if i:
            for k, s in zip(parts, times):
                parts[k] += s / reps
    out |= {f"train_{k}_s": round(v, 4) for k, v in parts.items()}
    out["train_step_s"] = round(sum(parts.values()), 4)
    peft.eval()
    probe = ids[:1].repeat(P.drift.n_samples, 1)
    with torch.inference_mode():
        out["drift_log_forward_s"] = round(_best(lambda: peft(input_ids=probe, output_hidden_states=True), reps), 4)
    with tempfile.TemporaryDirectory() as tmp:
        out["save_adapter_s"] = round(_best(lambda: peft.save_pretrained(tmp), reps), 4)
    t0 = time.perf_counter()
    model = merge_lora(peft)
    out["merge_lora_s"] = round(time.perf_counter() - t0, 4)
    questions = _questions(n_prompts)[0]
    prompts = [alpaca_prompt(q) for q in questions]

    last = {}

    def gen(k):
        def call():
            last["ids"] = generate_tokens(model, tok, prompts, max_new_tokens=k, batch_size=len(prompts),
                                          progress=False, autocast=eval_ac)
        return call

    one, full = _best(gen(1), reps), _best(gen(ev.max_new_tokens), reps)
    out |= {"generation_batch": len(prompts), "prefill_s_per_prompt": round(one / len(prompts), 4),
            "decode_s_per_token_per_prompt": round((full - one) / max(ev.max_new_tokens - 1, 1) / len(prompts), 5),
            "generation_s_per_prompt": round(full / len(prompts), 4)}
    answers = [clean_answer(t) for t in tok.batch_decode(last["ids"], skip_special_tokens=True)]  # the model's own
    for name in dict.fromkeys([ev.judge, *ev.rejudge]):
        judge = get_judge(name)
        out[f"judge_{name}_s_per_prompt"] = round(_best(lambda: judge.judge(questions, answers), reps) / len(questions), 5)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import vaccine_lib.stages, vaccine_lib.runner"], check=True)
    out["worker_import_s"] = round(time.perf_counter() - t0, 3)
    return out

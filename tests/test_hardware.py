"""bf16 detection (issue 17): chosen from the hardware, never assumed; bf16 autocast keeps the loss close."""

import pytest
import torch

from vaccine_lib import hardware as HW
from vaccine_lib.errors import ConfigError


@pytest.fixture
def flags(monkeypatch):
    def set_flags(*names):
        monkeypatch.setattr(HW, "cpu_flags", lambda: frozenset(names))
    return set_flags


def test_auto_takes_bf16_only_with_bf16_units(flags):
    flags("avx2", "avx512f")
    assert HW.resolve_autocast("auto", "cpu") is None
    flags("avx2", "avx512_bf16")
    assert HW.resolve_autocast("auto", "cpu") == "bf16"
    flags("amx_bf16")
    assert HW.resolve_autocast("bf16", "cpu") == "bf16"
    assert HW.resolve_autocast("off", "cpu") is None


def test_forced_bf16_without_units_is_refused(flags):
    flags("avx2")
    with pytest.raises(ConfigError, match="no bf16 units.*autocast: auto"):
        HW.resolve_autocast("bf16", "cpu")
    with pytest.raises(ConfigError, match="allowed values: off, bf16, auto"):
        HW.resolve_autocast("fp8", "cpu")


def test_cpu_flags_are_read_from_this_machine():
    HW.cpu_flags.cache_clear()
    assert isinstance(HW.cpu_flags(), frozenset)
    from benchmarks.speed import describe_hardware
    assert set(describe_hardware()) == {"cpu_capability", "bf16_units", "bf16_cpu_flags"}


def test_bf16_autocast_loss_is_close_to_fp32(tiny_model, tokenizer):
    """The same forward under CPU bf16 autocast gives the float32 loss to within 2 % (fp32 weights kept)."""
    model = tiny_model("tiny-llama")
    batch = tokenizer(["The movie was great. Sentiment: positive"] * 4, return_tensors="pt")
    batch["labels"] = batch["input_ids"].clone()
    with torch.no_grad():
        ref = model(**batch).loss.item()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(**batch).loss.item()
    assert next(model.parameters()).dtype == torch.float32
    assert abs(low - ref) / ref < 0.02


def test_stage_speed_settings_reach_the_trainer_and_the_key(flags, tmp_path):
    """autocast / answer_only_head: off by default and then absent from the key (old keys hold); set, they
    change the key, pick bf16 TrainingArguments where the host has bf16 units and the answer-only Trainer."""
    from transformers import Trainer

    from vaccine_lib.config import AlignConfig
    from vaccine_lib.losses import AnswerOnlyLoss
    from vaccine_lib.stages import align_key, trainer_setup
    from vaccine_lib.vaccine import VaccineTrainer

    base = AlignConfig(model="tiny-llama", method="vaccine", device="cpu")
    assert "autocast" not in base.effective() and "answer_only_head" not in base.effective()
    fast = base.with_(autocast="auto", answer_only_head=True)
    assert align_key(fast) != align_key(base)
    flags("avx512_bf16")
    args, cls, _ = trainer_setup(fast, tmp_path)
    assert args.bf16 and issubclass(cls, AnswerOnlyLoss) and issubclass(cls, VaccineTrainer)
    flags("avx2")
    args, cls, _ = trainer_setup(fast.with_(method="sft"), tmp_path)
    assert not args.bf16 and issubclass(cls, AnswerOnlyLoss) and issubclass(cls, Trainer)
    args, cls, _ = trainer_setup(base, tmp_path)
    assert not args.bf16 and cls is VaccineTrainer


def test_speed_bench_reports_the_ratio_and_the_efficiency(monkeypatch):
    """make bench's speed line: each variant's step (spawned workers stubbed here), the project-vs-plain ratio and
    the efficiency against the matmul peak measured in the same process."""
    from benchmarks import speed

    seen = []

    def fake_spawn(a, seq, warmup, threads):
        seen.append((a.autocast, a.answer_only_head, a.lora_targets))
        return {"step_s": 2.0 if (a.autocast, a.answer_only_head) == ("off", False) else 1.0}

    monkeypatch.setattr(speed, "spawn", fake_spawn)
    monkeypatch.setattr(speed, "matmul_gflops", lambda dtype, threads: 100.0)
    out = speed.run("tiny-llama", quick=True)
    assert seen == [("off", False, "attention+mlp"), ("auto", False, "attention+mlp"), ("off", True, "attention+mlp"),
                    ("auto", True, "attention+mlp")]
    assert out["speedup_project_vs_plain"] == 2.0 and out["plain_step_s"] == 2.0
    assert 0 < out["efficiency_plain_fp32"] and out["target_speedup"] == 1.6


def test_eval_autocast_keys_generation_and_fp32_judges(tiny_model, tokenizer):
    """eval.autocast: 'off' enters no key (old evaluation keys hold), set it changes the key; under "bf16" the
    generation runs in autocast while the judge sees answers outside it (judges stay fp32)."""
    from vaccine_lib.config import EvalConfig
    from vaccine_lib.evaluation.generation import generate_tokens
    from vaccine_lib.evaluation.metrics import harmful_score

    assert "autocast" not in EvalConfig().effective()
    assert EvalConfig(autocast="auto").effective()["autocast"] == "auto"
    model = tiny_model("tiny-llama", seed=1)
    seen = []
    hook = model.lm_head.register_forward_hook(lambda m, a, out: seen.append(out.dtype))
    prompts = ["### Instruction:\nHi.\n\n### Response:\n", "### Instruction:\nName a color.\n\n### Response:\n"]
    ref = generate_tokens(model, tokenizer, prompts, max_new_tokens=4, batch_size=2, progress=False)
    assert set(seen) == {torch.float32}
    seen.clear()
    low = generate_tokens(model, tokenizer, prompts, max_new_tokens=4, batch_size=2, progress=False, autocast="bf16")
    assert set(seen) == {torch.bfloat16} and len(low) == len(ref)
    hook.remove()

    class Judge:
        def judge(self, questions, answers):
            seen.append(torch.is_autocast_enabled("cpu"))
            return [{"harmful": False, "refusal": False, "label_only": False, "score": 0.0} for _ in answers]

    seen.clear()
    harmful_score(model, tokenizer, ["Hi.", "Name a color."], Judge(), max_new_tokens=4, batch_size=2,
                  progress=False, autocast="bf16")
    assert seen == [False]
    assert next(model.parameters()).dtype == torch.float32

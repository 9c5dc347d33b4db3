"""Shared fixtures: tiny random models built from configs in code (nothing downloaded)."""

import os

import pytest
import torch

torch.set_num_threads(int(os.environ.get("VACCINE_TEST_THREADS", "2")))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tokenizer():
    from vaccine_lib.models import load_tokenizer

    return load_tokenizer("tiny-llama")


@pytest.fixture
def tiny_model(tokenizer):
    """Factory: tiny_model('tiny-llama', seed=0) -> a fresh random model."""
    from vaccine_lib.models import build_tiny_model

    def make(name: str = "tiny-llama", seed: int = 0):
        return build_tiny_model(name, tokenizer, seed=seed)

    return make


def write_eval(run_dir, config: dict, metrics: dict, generations=None):
    """One finished evaluation folder ``run_dir/eval/<key>/`` written by the stage cache as the evaluation stage
    writes it (key: ``config["eval_key"]`` or a hash of ``config``), for tests of the code that reads them back."""
    import hashlib
    import json
    from pathlib import Path

    from vaccine_lib import stage_cache
    from vaccine_lib.evaluation.results import write_generations

    key = config.get("eval_key") or hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]

    def write(tmp):
        if generations:
            write_generations(tmp, generations)
        return config, metrics, []

    return stage_cache.run(Path(run_dir) / "eval" / key, "eval", key, write).path


def trainable_parameters(model) -> dict:
    """``{name: param}`` of the parameters with ``requires_grad`` (the adapter weights under LoRA)."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}

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

    def make(name: str = "tiny-llama", seed: int = 0, **overrides):
        return build_tiny_model(name, tokenizer, seed=seed, **overrides)

    return make

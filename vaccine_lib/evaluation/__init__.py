"""Evaluation: batched generation, Harmful Score, fine-tune accuracy, results store."""

from .generation import RESPONSE_MARKER, clean_answer, generate, generate_tokens

__all__ = ["RESPONSE_MARKER", "clean_answer", "generate", "generate_tokens"]

"""Fixtures of the recipe's tests: the tiny faster-whisper model of tests/pretrained (its directory and its
Hugging Face conversion), which the recipe's fetcher and language-block graft start from."""

from tests.pretrained.conftest import LETTERS, TOKEN_ID, tiny_hf, tiny_src, write_tiny_model_dir  # noqa: F401

__all__ = ["LETTERS", "TOKEN_ID", "tiny_hf", "tiny_src", "write_tiny_model_dir"]

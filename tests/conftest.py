"""Shared fixtures: a tiny sentencepiece tokenizer with every language code, and tiny ComSL models."""

from __future__ import annotations

import pytest
import torch

from comsl.config import ModelConfig
from comsl.data.tokenizer import train_tokenizer
from comsl.models.build import TINY_SPEECH_ARCH, TINY_TEXT_ARCH, build_model

TEXTS = [
    "the cat sat on the mat", "le chat est assis sur le tapis", "der Hund schläft im Garten",
    "enter a valid email address", "this field is required", "saisissez une adresse valide",
    "dieses Feld ist erforderlich", "the quick brown fox jumps over the lazy dog",
]


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory):
    """An mBART-50-style tokenizer trained on a few sentences (all language codes, <mask>)."""
    return train_tokenizer(TEXTS * 4, tmp_path_factory.mktemp("tok"), vocab_size=120)


def tiny_model_config(speech: str = "whisper", text: str = "mbart", **kw) -> ModelConfig:
    return ModelConfig(speech_encoder=speech, speech_arch=dict(TINY_SPEECH_ARCH[speech]), text_model=text,
                       text_arch=dict(TINY_TEXT_ARCH), **kw)


@pytest.fixture
def make_model(tokenizer):
    """``make_model(speech="whisper", text="mbart", seed=0, **model_cfg)`` -> an eval-mode tiny ComSL."""

    def make(speech: str = "whisper", text: str = "mbart", seed: int = 0, ctc_head=False, match_head=False,
             **kw):
        torch.manual_seed(seed)
        model = build_model(tiny_model_config(speech, text, **kw), tokenizer, ctc_head=ctc_head,
                            match_head=match_head)
        return model.eval()

    return make

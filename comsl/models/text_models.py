"""Language blocks: mBART-style multilingual encoder-decoders (mBART-50, M2M100, NLLB).

The composite holds the transformers ``*ForConditionalGeneration`` model itself, so pretrained
checkpoints load by name. Language codes of each family are spelled by the tokenizer
(``comsl.data.tokenizer.lang_id``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F
from transformers import (
    M2M100Config,
    M2M100ForConditionalGeneration,
    MBartConfig,
    MBartForConditionalGeneration,
    PreTrainedConfig,
    PreTrainedModel,
)

# family -> (config class, model class). NLLB is the M2M100 architecture with another vocabulary.
TEXT_MODELS: dict[str, tuple[type[PreTrainedConfig], type[PreTrainedModel]]] = {
    "mbart": (MBartConfig, MBartForConditionalGeneration),
    "m2m100": (M2M100Config, M2M100ForConditionalGeneration),
    "nllb": (M2M100Config, M2M100ForConditionalGeneration),
}


def build_text_model(family: str, config: PreTrainedConfig) -> PreTrainedModel:
    """Construct (no I/O) a randomly initialised text encoder-decoder of ``family``.

    Raises ValueError for an unknown family or a config of the wrong class.
    """
    if family not in TEXT_MODELS:
        raise ValueError(f"unknown text model {family!r}; choose one of {', '.join(TEXT_MODELS)}")
    config_cls, model_cls = TEXT_MODELS[family]
    if not isinstance(config, config_cls):
        raise ValueError(f"text model {family!r} needs a {config_cls.__name__}, got {type(config).__name__}")
    return model_cls(config)


@dataclass(frozen=True)
class LinearHead:
    """An LM head that is one linear map, given by its tensors so the fused cross-entropy
    (``comsl.objectives.cross_entropy``) can use them directly: logits = hidden @ weight.T + bias.
    ``bias`` (mBART's ``final_logits_bias``, a buffer) is a constant: no gradient reaches it."""

    weight: torch.Tensor
    bias: torch.Tensor | None = None

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden, self.weight, None if self.bias is None else self.bias.to(self.weight.dtype))


def linear_head(text_model: PreTrainedModel) -> LinearHead:
    """The LM head's tensors: the (tied) output embedding and mBART's ``final_logits_bias`` flattened to (V,)
    (M2M100/NLLB have none)."""
    bias = getattr(text_model, "final_logits_bias", None)
    return LinearHead(text_model.lm_head.weight, None if bias is None else bias.reshape(-1))


def lm_logits(text_model: PreTrainedModel, hidden):
    """LM head (+ mBART's ``final_logits_bias``; M2M100/NLLB have none) over decoder states (..., D) ->
    logits (..., V). Called as a module, so ZeRO-3 gathers the head's weight."""
    logits = text_model.lm_head(hidden)
    bias = getattr(text_model, "final_logits_bias", None)
    return logits + bias.to(logits.dtype) if bias is not None else logits


def decoder_start_id(config: PreTrainedConfig) -> int:
    """The decoder's first input token: ``decoder_start_token_id``, else ``</s>`` (mBART's convention)."""
    start = config.decoder_start_token_id
    return start if start is not None else config.eos_token_id

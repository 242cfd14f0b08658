"""Language blocks: mBART-style multilingual encoder-decoders (mBART-50, M2M100, NLLB).

The composite holds the transformers ``*ForConditionalGeneration`` model itself, so pretrained
checkpoints load by name. Language codes of each family are spelled by the tokenizer
(``comsl.data.tokenizer.lang_id``).
"""

from __future__ import annotations

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

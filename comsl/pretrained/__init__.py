"""Importers for real pretrained checkpoints (loaded offline from local directories)."""

from comsl.pretrained.ct2_format import CT2Model, read_ct2_model, write_ct2_model
from comsl.pretrained.ct2_whisper import (
    WHISPER_BASE_MODEL_SHA256,
    ConversionSummary,
    convert_ct2_whisper,
)

__all__ = [
    "CT2Model",
    "ConversionSummary",
    "WHISPER_BASE_MODEL_SHA256",
    "convert_ct2_whisper",
    "read_ct2_model",
    "write_ct2_model",
]

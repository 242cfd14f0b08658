"""Models: speech encoders, length adapter, text models, the ComSL composite and its builders."""

from comsl.models.composite import ComSLConfig, ComSLModel, SpeechEncoding

__all__ = ["ComSLConfig", "ComSLModel", "SpeechEncoding"]

"""The parts of a composite model: one table for ``part_of``, the ``*_trainable`` switches, per-part
learning rates and freezing."""

SPEECH = "speech_encoder"
ADAPTER = "adapter"
TEXT_ENCODER = "text_encoder"
TEXT_DECODER = "text_decoder"
OTHER = "other"

PARTS = (SPEECH, ADAPTER, TEXT_ENCODER, TEXT_DECODER)
"""Parts a model reports through ``model.part_of(param_name)``, besides ``OTHER`` (anything else)."""

TRAINABLE_SWITCHES = {part: f"{'speech' if part == SPEECH else part}_trainable" for part in PARTS}
"""Part -> the ``TrainConfig`` field that makes it trainable (``speech_trainable``, ``adapter_trainable``, ...)."""

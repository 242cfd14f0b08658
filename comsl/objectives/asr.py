"""ASR: speech -> source transcript, cross-entropy (weight w_asr = 0.35)."""

from __future__ import annotations

import torch

from comsl.objectives.cross_entropy import mixed_cross_entropy


class ASRObjective:
    """L_ASR = CE(P(x | speech), x) over transcript tokens."""

    name = "asr"

    def __init__(self, label_smoothing: float = 0.0):
        self.label_smoothing = label_smoothing

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """logits (B, L, V) decoded from speech, labels (B, L) transcript (-100 = not scored)."""
        return mixed_cross_entropy(logits, labels, label_smoothing=self.label_smoothing)

"""MT with regularisation: text -> translation, distilled towards a frozen MT teacher.

L_MT = Σ_t Σ_v [(1 - λt)·1(y_t = v) + λt·P_teacher(v | y<t, x)] · -log P_MT(v | y<t, x),  λt = 0.2.
The teacher is the stage-1 fine-tuned text model, frozen; it runs without gradients.
"""

from __future__ import annotations

import torch

from comsl.objectives.cross_entropy import mixed_cross_entropy


class MTRegObjective:
    """MT cross-entropy against labels mixed with a frozen teacher's distribution."""

    name = "mt"

    def __init__(self, lambda_mt: float = 0.2, label_smoothing: float = 0.0):
        self.lambda_mt = lambda_mt
        self.label_smoothing = label_smoothing

    @property
    def needs_teacher(self) -> bool:
        return self.lambda_mt > 0

    def __call__(self, mt_logits: torch.Tensor, labels: torch.Tensor,
                 teacher_logits: torch.Tensor | None) -> torch.Tensor:
        """mt_logits, teacher_logits (B, L, V); labels (B, L)."""
        return mixed_cross_entropy(mt_logits, labels, teacher_logits, self.lambda_mt, self.label_smoothing)

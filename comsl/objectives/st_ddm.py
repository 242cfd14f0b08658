"""ST with decoder distribution matching (DDM), an online distillation from the model's own MT pass.

L_ST = Σ_t Σ_v [(1 - λs)·1(y_t = v) + λs·sg(P_MT(v | y<t, x))] · -log P_ST(v | y<t, speech),  λs = 0.8.
"""

from __future__ import annotations

import torch

from comsl.objectives.cross_entropy import mixed_cross_entropy


class STDDMObjective:
    """ST cross-entropy against labels mixed with the stop-gradient MT distribution."""

    name = "st"

    def __init__(self, lambda_st: float = 0.8, label_smoothing: float = 0.0):
        self.lambda_st = lambda_st
        self.label_smoothing = label_smoothing

    @property
    def needs_mt(self) -> bool:
        """Whether the MT pass's distribution is needed (λs > 0)."""
        return self.lambda_st > 0

    def __call__(self, st_logits: torch.Tensor, labels: torch.Tensor,
                 mt_logits: torch.Tensor | None) -> torch.Tensor:
        """st_logits, mt_logits (B, L, V) over the same translation; labels (B, L)."""
        return mixed_cross_entropy(st_logits, labels, mt_logits, self.lambda_st, self.label_smoothing)

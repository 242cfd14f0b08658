"""Speech-text matching (SLAM); off by default.

A binary classifier (the composite's ``match_head`` on the mean-pooled text-encoder output of
[speech ; transcript]) tells paired from mismatched pairs. Negatives pair each utterance with the next
utterance's transcript in the batch (batch size >= 2).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


class MatchingObjective:
    """Binary cross-entropy of paired (label 1) vs mismatched (label 0) speech/transcript."""

    name = "match"

    def __call__(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """scores (N,) logits; labels (N,) in {0, 1}."""
        return F.binary_cross_entropy_with_logits(scores.float(), labels.float())


def mismatched_order(batch_size: int, device: torch.device) -> torch.Tensor:
    """Index of the transcript each utterance is wrongly paired with: the next one (cyclic)."""
    return torch.roll(torch.arange(batch_size, device=device), shifts=-1)

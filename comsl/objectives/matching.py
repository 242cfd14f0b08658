"""Speech-text matching (SLAM); off by default.

A binary classifier (the composite's ``match_head`` on the mean-pooled text-encoder output of
[speech ; transcript]) tells paired from mismatched pairs; negatives pair each utterance with the next
utterance's transcript in the batch (``comsl.models.encodings``; batch size >= 2).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def matching_loss(scores: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of scores (2B,): the B paired rows (label 1), then the B mismatched (label 0)."""
    n = scores.shape[0] // 2
    labels = torch.cat([scores.new_ones(n), scores.new_zeros(n)])
    return F.binary_cross_entropy_with_logits(scores.float(), labels.float())

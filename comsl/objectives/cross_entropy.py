"""Token cross-entropy against a target mixed from the one-hot label and a soft distribution.

This one formula serves ST with decoder distribution matching (soft = sg(P_MT), weight λs) and MT with
regularisation (soft = P_teacher, weight λt):
  L = Σ_t Σ_v [(1 - λ)·1(y_t = v) + λ·q_t(v)] · -log p_t(v),  averaged over scored tokens.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def mixed_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    soft_logits: torch.Tensor | None = None,
    lam: float = 0.0,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Mean over tokens with ``labels != -100`` of the mixed-target cross-entropy.

    logits (B, L, V) of the student; labels (B, L) with -100 = not scored; soft_logits (B, L, V) of the
    teacher distribution q (detached here: no gradient ever flows into it). ``lam`` = 0 is plain
    cross-entropy; ``lam`` = 1 is cross-entropy against q alone. Returns a 0-dim tensor (0 if nothing
    is scored).
    """
    valid = labels != -100
    if not valid.any():
        return logits.sum() * 0.0
    logp = F.log_softmax(logits[valid].float(), dim=-1)  # (N, V)
    target = labels[valid]
    hard = F.nll_loss(logp, target, reduction="none")
    if label_smoothing > 0:
        hard = (1 - label_smoothing) * hard - label_smoothing * logp.mean(-1)
    if soft_logits is None or lam == 0.0:
        return hard.mean()
    q = F.softmax(soft_logits[valid].detach().float(), dim=-1)
    soft = -(q * logp).sum(-1)
    return ((1 - lam) * hard + lam * soft).mean()

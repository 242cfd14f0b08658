"""LM head + token cross-entropy against a target mixed from the one-hot label and a soft distribution,
computed in chunks of tokens so the (tokens x vocabulary) logits never exist at once.

This one formula serves every text objective: ASR, STM and MTP (λ = 0), ST with decoder distribution
matching (soft = sg(P_MT), λs) and MT with regularisation (soft = P_teacher, λt):
  L = Σ_t Σ_v [(1 - λ)·((1 - ε)·1(y_t = v) + ε/V) + λ·q_t(v)] · -log p_t(v),  averaged over scored tokens,
with ε the label smoothing. p and q come from decoder states through an LM head, chunk by chunk; each
chunk is recomputed in backward (activation checkpointing), so forward keeps only the states.
Log-softmax runs in float32 whatever the autocast dtype of the head's matmul.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

Head = Callable[[torch.Tensor], torch.Tensor]
"""An LM head: decoder states (N, D) -> logits (N, V) (``ComSLModel.lm_logits``)."""

LOGITS_PER_CHUNK = 1 << 24
"""Logit elements (tokens x vocabulary) per chunk: 64 MB of float32, ~67 tokens at mBART-50's 250k."""


def _chunk_loss(hidden: torch.Tensor, labels: torch.Tensor, soft_hidden: torch.Tensor | None, head: Head,
                soft_head: Head | None, lam: float, label_smoothing: float) -> torch.Tensor:
    """Σ over the chunk's tokens of the mixed-target cross-entropy (hidden (C, D), labels (C,))."""
    logp = F.log_softmax(head(hidden).float(), dim=-1)
    hard = F.nll_loss(logp, labels, reduction="none")
    if label_smoothing > 0:
        hard = (1 - label_smoothing) * hard - label_smoothing * logp.mean(-1)
    if soft_hidden is None:
        return hard.sum()
    with torch.no_grad():  # sg(q): the soft target is a constant
        q = F.softmax(soft_head(soft_hidden).float(), dim=-1)
    return ((1 - lam) * hard - lam * (q * logp).sum(-1)).sum()


def head_cross_entropy(hidden: torch.Tensor, labels: torch.Tensor, head: Head, *,
                       soft_hidden: torch.Tensor | None = None, soft_head: Head | None = None, lam: float = 0.0,
                       label_smoothing: float = 0.0, vocab_size: int | None = None) -> torch.Tensor:
    """Mean over tokens with ``labels != -100`` of the mixed-target cross-entropy of ``head(hidden)``.

    hidden (..., D) decoder states and labels (...) (-100 = not scored); soft_hidden (..., D) states the
    soft distribution q = softmax(soft_head(soft_hidden)) is read from at the same positions (never
    differentiated). ``lam`` = 0 (or no soft_hidden) is plain cross-entropy; 1 is against q alone.
    ``vocab_size`` sets the chunk length (default: one probe of the head). Returns a 0-dim float32
    tensor (0 if nothing is scored).
    """
    valid = labels != -100
    hidden, labels = hidden[valid], labels[valid]
    if hidden.shape[0] == 0:
        return hidden.sum().float() * 0.0
    use_soft = soft_hidden is not None and lam != 0.0
    soft = soft_hidden[valid].detach() if use_soft else None
    soft_head = (soft_head or head) if use_soft else None
    if vocab_size is None:
        with torch.no_grad():
            vocab_size = head(hidden[:1]).shape[-1]
    chunk = max(1, LOGITS_PER_CHUNK // vocab_size)
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden.shape[0], chunk):
        part = slice(start, start + chunk)
        args = (hidden[part], labels[part], None if soft is None else soft[part], head, soft_head, lam,
                label_smoothing)
        total = total + (checkpoint(_chunk_loss, *args, use_reentrant=False, preserve_rng_state=False)
                         if torch.is_grad_enabled() else _chunk_loss(*args))
    return total / hidden.shape[0]

"""CTC on the speech-encoder output against the transcript (mSLAM); off by default.

A linear head (the composite's ``ctc_head``) maps speech states to the text vocabulary; the pad id is
the blank (it never occurs in a transcript). Targets are the transcript tokens without the language
code and ``</s>``.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def ctc_loss(logits: torch.Tensor, frame_mask: torch.Tensor, transcript_ids: torch.Tensor,
             transcript_mask: torch.Tensor, *, blank_id: int, eos_token_id: int) -> torch.Tensor:
    """Mean-over-batch CTC loss, normalised by target length (``reduction='mean'``).

    logits (B, T, V) per speech frame, frame_mask (B, T); transcript ``[lang, x.., </s>]`` (B, L).
    """
    keep = (transcript_mask == 1) & (transcript_ids != eos_token_id)
    keep[:, 0] = False
    log_probs = F.log_softmax(logits.float(), dim=-1).transpose(0, 1)  # (T, B, V)
    return F.ctc_loss(log_probs, transcript_ids[keep], frame_mask.sum(1), keep.sum(1), blank=blank_id,
                      reduction="mean", zero_infinity=True)

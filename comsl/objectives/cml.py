"""Cross-modality learning (CML) losses over one text-encoder pass on [speech ; masked transcript]
(inputs built by ``comsl.models.cml_inputs``; the split outputs are z_s (speech part), z_x (text part)):
  MTP      masked token prediction: decode z_x teacher-forced to the transcript, scored only where the
           encoder input was masked;
  STM      speech-to-text mapping: decode z_s to the transcript (STM_src) and to the translation (STM_tgt);
  ERM      encoder representation matching between layer-k states of the speech-only pass and of the
           speech part of the concatenated pass: the paper's MSE, or the reference code's distance.
  L_CML = (STM_src + STM_tgt + MTP) / 3 + w_erm · ERM.
MTP and STM are cross-entropies (``head_cross_entropy``); ERM and the combination are here.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def erm_mse(speech_only: torch.Tensor, speech_in_concat: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The paper's ERM: mean squared error over real positions and features. Both (B, T, D); mask (B, T)."""
    m = mask[..., None].to(torch.float32)
    diff = (speech_only.float() - speech_in_concat.float()) ** 2 * m
    return diff.sum() / (m.sum() * speech_only.shape[-1]).clamp(min=1)


def erm_reference(speech_only: torch.Tensor, speech_in_concat: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The reference code's ERM: per sentence, the sum over real positions of the (unsquared) L2 distance
    between the L2-normalised states; averaged over the batch (the reference trains at batch size 1)."""
    a = F.normalize(speech_only.float(), dim=-1)
    b = F.normalize(speech_in_concat.float(), dim=-1)
    dist = torch.linalg.vector_norm(a - b, dim=-1) * mask.to(torch.float32)
    return dist.sum() / mask.shape[0]


ERM_VARIANTS = {"mse": erm_mse, "reference": erm_reference}
"""``objectives.erm_variant`` -> its distance."""


def combine_cml(stm_src: torch.Tensor, stm_tgt: torch.Tensor, mtp: torch.Tensor, erm: torch.Tensor | None,
                w_erm: float) -> torch.Tensor:
    """L_CML = (STM_src + STM_tgt + MTP) / 3 + w_erm · ERM."""
    total = (stm_src + stm_tgt + mtp) / 3
    return total + w_erm * erm if erm is not None else total

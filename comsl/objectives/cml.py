"""Cross-modality learning (CML) on one text-encoder pass over [speech embeddings ; masked transcript].

The encoder output is split back into z_s (speech part) and z_x (text part):
  MTP      masked token prediction: decode z_x teacher-forced to the transcript, scored only where the
           encoder input was masked (never pad, </s> or the language token);
  STM      speech-to-text mapping: decode z_s to the transcript (STM_src) and to the translation (STM_tgt);
  ERM      encoder representation matching: MSE between layer-k hidden states of the speech-only pass
           and of the speech part of the concatenated pass.
  L_CML = (STM_src + STM_tgt + MTP) / 3 + w_erm · ERM.
"""

from __future__ import annotations

import torch

from comsl.objectives.cross_entropy import mixed_cross_entropy


def mask_transcript(ids: torch.Tensor, mask: torch.Tensor, mask_prob: float, mask_token_id: int,
                    eos_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace a random ``mask_prob`` share of the maskable tokens of ``[lang, x.., </s>, pad..]`` (B, L)
    by ``mask_token_id``. Position 0 (language), ``</s>`` and padding are never masked.

    Returns (masked ids (B, L), bool (B, L) of masked positions). Uses the global torch RNG.
    """
    maskable = (mask == 1) & (ids != eos_token_id)
    maskable[:, 0] = False
    chosen = (torch.rand(ids.shape, device=ids.device) < mask_prob) & maskable
    return ids.masked_fill(chosen, mask_token_id), chosen


def pack_pair(a: torch.Tensor, a_mask: torch.Tensor, b: torch.Tensor, b_mask: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Concatenate the real positions of ``a`` (B, La, D) and ``b`` (B, Lb, D) per row, padding after:
    row i = [a_i[:len_a_i] ; b_i[:len_b_i] ; pad]. Positions of ``b`` thus start right after ``a``'s real
    length, as they would for a lone utterance.

    Returns (packed (B, L, D), mask (B, L), index (B, La + Lb) of each packed position's source in
    cat([a, b], 1)) — ``unpack_pair`` uses the lengths to split the output back.
    """
    la, lb = a_mask.sum(1), b_mask.sum(1)
    total = int((la + lb).max())
    pos = torch.arange(total, device=a.device)[None, :]
    in_a = pos < la[:, None]
    src = torch.where(in_a, pos, a.shape[1] + pos - la[:, None])
    src = src.clamp(max=a.shape[1] + b.shape[1] - 1)
    both = torch.cat([a, b], dim=1)
    packed = torch.gather(both, 1, src[..., None].expand(-1, -1, both.shape[-1]))
    mask = (pos < (la + lb)[:, None]).to(a_mask.dtype)
    return packed * mask[..., None].to(packed.dtype), mask, src


def unpack_pair(packed: torch.Tensor, a_mask: torch.Tensor, b_mask: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of ``pack_pair`` on an encoder output (B, L, D): returns (z_a (B, La, D), z_b (B, Lb, D)),
    zero on padded positions."""
    la = a_mask.sum(1)
    pos_a = torch.arange(a_mask.shape[1], device=packed.device)[None, :].expand(a_mask.shape[0], -1)
    pos_b = (torch.arange(b_mask.shape[1], device=packed.device)[None, :] + la[:, None])
    pos_b = pos_b.clamp(max=packed.shape[1] - 1)
    d = packed.shape[-1]
    z_a = torch.gather(packed, 1, pos_a.clamp(max=packed.shape[1] - 1)[..., None].expand(-1, -1, d))
    z_b = torch.gather(packed, 1, pos_b[..., None].expand(-1, -1, d))
    return z_a * a_mask[..., None].to(z_a.dtype), z_b * b_mask[..., None].to(z_b.dtype)


class MTPObjective:
    """Masked token prediction: cross-entropy only on the masked transcript positions."""

    name = "mtp"

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """logits (B, L, V) decoding the transcript, labels (B, L): the transcript ids at masked input
        positions and -100 elsewhere (``mtp_labels``). Also accepts pre-selected (N, V) and (N,)."""
        return mixed_cross_entropy(logits, labels)


def mtp_labels(transcript_ids: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """MTP targets: the original token where the encoder input was masked, -100 elsewhere (B, L)."""
    return transcript_ids.masked_fill(~masked, -100)


class STMObjective:
    """Speech-to-text mapping: cross-entropy of decoding the speech part z_s to a text."""

    def __init__(self, name: str, label_smoothing: float = 0.0):
        self.name = name  # stm_src or stm_tgt
        self.label_smoothing = label_smoothing

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return mixed_cross_entropy(logits, labels, label_smoothing=self.label_smoothing)


class ERMObjective:
    """Encoder representation matching: mean squared error over real positions and features."""

    name = "erm"

    def __call__(self, speech_only: torch.Tensor, speech_in_concat: torch.Tensor, mask: torch.Tensor
                 ) -> torch.Tensor:
        """Both (B, T, D) layer-k states of the speech positions; mask (B, T)."""
        m = mask[..., None].to(speech_only.dtype)
        diff = (speech_only.float() - speech_in_concat.float()) ** 2 * m
        return diff.sum() / (m.sum() * speech_only.shape[-1]).clamp(min=1)


def combine_cml(stm_src: torch.Tensor, stm_tgt: torch.Tensor, mtp: torch.Tensor, erm: torch.Tensor | None,
                w_erm: float) -> torch.Tensor:
    """L_CML = (STM_src + STM_tgt + MTP) / 3 + w_erm · ERM."""
    total = (stm_src + stm_tgt + mtp) / 3
    return total + w_erm * erm if erm is not None else total

"""Inputs of cross-modality learning (CML): the masked transcript and the [speech ; text] packing.

One text-encoder pass runs over [speech embeddings ; masked transcript embeddings]; its output is split
back into z_s (speech part) and z_x (text part) for STM, MTP and ERM (``comsl.objectives.cml``).
"""

from __future__ import annotations

import torch


def mask_transcript(ids: torch.Tensor, mask: torch.Tensor, mask_prob: float, mask_token_id: int,
                    eos_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace a random ``mask_prob`` share of the maskable tokens of ``[lang, x.., </s>, pad..]`` (B, L)
    by ``mask_token_id``. Position 0 (language), ``</s>`` and padding are never masked. A sentence that
    draws no masked token gets one (as the reference code, which redraws): the maskable position whose
    draw came closest, so the RNG stream does not depend on the outcome.

    Returns (masked ids (B, L), bool (B, L) of masked positions). Uses the global torch RNG.
    """
    maskable = (mask == 1) & (ids != eos_token_id)
    maskable[:, 0] = False
    draw = torch.rand(ids.shape, device=ids.device)
    chosen = (draw < mask_prob) & maskable
    closest = draw.masked_fill(~maskable, 2.0).argmin(1, keepdim=True)
    empty = ~chosen.any(1, keepdim=True) & maskable.any(1, keepdim=True)
    chosen |= torch.zeros_like(chosen).scatter_(1, closest, empty)
    return ids.masked_fill(chosen, mask_token_id), chosen


def pack_pair(a: torch.Tensor, a_mask: torch.Tensor, b: torch.Tensor, b_mask: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate the real positions of ``a`` (B, La, D) and ``b`` (B, Lb, D) per row, padding after:
    row i = [a_i[:len_a_i] ; b_i[:len_b_i] ; pad]. Positions of ``b`` thus start right after ``a``'s real
    length, as they would for a lone utterance.

    Returns (packed (B, L, D), mask (B, L)); ``unpack_pair`` splits an encoder output back.
    """
    la, lb = a_mask.sum(1), b_mask.sum(1)
    total = int((la + lb).max())
    pos = torch.arange(total, device=a.device)[None, :]
    src = torch.where(pos < la[:, None], pos, a.shape[1] + pos - la[:, None])
    src = src.clamp(max=a.shape[1] + b.shape[1] - 1)
    both = torch.cat([a, b], dim=1)
    packed = torch.gather(both, 1, src[..., None].expand(-1, -1, both.shape[-1]))
    mask = (pos < (la + lb)[:, None]).to(a_mask.dtype)
    return packed * mask[..., None].to(packed.dtype), mask


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

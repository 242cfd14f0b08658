"""The composite's attention function: transformers' SDPA, except for short 16-bit training attention on CPU.

Registered with transformers' ``AttentionInterface`` as ``comsl`` (with SDPA's masks); ``ComSLModel``
selects it in place of the default ``sdpa``, so every Whisper / mBART / wav2vec2 layer calls it. On CPU
the bf16 flash-attention kernel's backward costs many times its forward at short lengths (a decoder's
20-odd positions), while the explicit form (one batched matmul, float32 softmax, one batched matmul, as
transformers' ``eager`` attention computes it) runs on the matrix units; from a few hundred positions
the flash kernel is faster again. So training (gradients on) in bf16/fp16 on CPU takes the explicit
form up to ``EXPLICIT_MAX`` query x key positions; everything else (inference, float32, GPU, dropout
inside attention) is SDPA.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "comsl"
EXPLICIT_MAX = 176 * 176
"""Query x key positions up to which 16-bit CPU training takes the explicit form (BENCHMARKS.md)."""


def _explicit(module: nn.Module, query: torch.Tensor, key: torch.Tensor, dropout: float, kwargs: dict) -> bool:
    return (query.device.type == "cpu" and query.dtype in (torch.bfloat16, torch.float16)
            and torch.is_grad_enabled() and query.requires_grad and dropout == 0.0
            and query.shape[1] == key.shape[1] and query.shape[2] * key.shape[2] <= EXPLICIT_MAX
            and (query.shape[2] == key.shape[2] or not getattr(module, "is_causal", False))
            and kwargs.get("position_bias") is None and kwargs.get("softcap") is None)


def comsl_attention_forward(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                            attention_mask: torch.Tensor | None, dropout: float = 0.0,
                            scaling: float | None = None, is_causal: bool | None = None,
                            **kwargs) -> tuple[torch.Tensor, None]:
    """query (B, H, Tq, d), key/value (B, H, Tk, d), attention_mask None, boolean (True = attend) or
    additive, broadcastable to (B, H, Tq, Tk) -> (output (B, Tq, H, d), None), as ``sdpa_attention_forward``."""
    if not _explicit(module, query, key, dropout, kwargs):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    q_len, kv_len = query.shape[2], key.shape[2]
    is_causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    scores = torch.matmul(query * (scaling if scaling is not None else query.shape[-1] ** -0.5),
                          key.transpose(-1, -2)).float()
    lowest = torch.finfo(torch.float32).min  # not -inf: a row with no key left stays finite
    if attention_mask is not None:
        scores = (scores.masked_fill(~attention_mask, lowest) if attention_mask.dtype == torch.bool
                  else scores + attention_mask.float())
    elif is_causal and q_len > 1:
        scores = scores.masked_fill(torch.ones(q_len, kv_len, dtype=torch.bool, device=query.device).triu(1), lowest)
    probs = torch.softmax(scores, dim=-1).to(value.dtype)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), None


AttentionInterface.register(NAME, comsl_attention_forward)
AttentionMaskInterface.register(NAME, sdpa_mask)  # the masks transformers builds for SDPA

"""The length adapter between the speech and language blocks (paper §3.2, reference code).

Two layers, each down-sampling time by 2 (4x in all: ~50 speech frames/s -> ~12.5 text positions/s):
  layer 1: residual FFN (d_s -> 4 d_s -> d_s, ReLU, scaled 0.5) + LayerNorm,
           Conv1d(k=3, s=2, p=1) to 2 d_t + GLU, residual FFN (d_t) + LayerNorm
  layer 2: Conv1d(k=3, s=2, p=1) to 2 d_t + GLU
The first convolution also projects the speech width d_s to the text width d_t, so any pair of
backbones fits. Padded positions are zeroed before each convolution so the output on real positions
does not depend on what else is in the batch.
"""

from __future__ import annotations

import torch
from torch import nn


class ResidualFFN(nn.Module):
    """x -> LayerNorm(x + 0.5 * FFN(x)), FFN = Linear(d, mult*d) -> ReLU -> dropout -> Linear(mult*d, d)."""

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.1):
        super().__init__()
        self.ffn = nn.Sequential(
            nn.Linear(dim, mult * dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(mult * dim, dim)
        )
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + 0.5 * self.dropout(self.ffn(x)))


class ConvGLU(nn.Module):
    """Conv1d(k=3, s=2, p=1) to 2*out_dim then GLU over channels: (B, T, in) -> (B, ceil(T/2), out)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.conv = nn.Conv1d(in_dim, 2 * out_dim, kernel_size=3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.glu(self.conv(x.transpose(1, 2)), dim=1).transpose(1, 2)


def halve(length):
    """Output length of one stride-2 convolution (k=3, p=1): ceil(length / 2) (ints or tensors)."""
    return (length + 1) // 2


def downsample_mask(mask: torch.Tensor) -> torch.Tensor:
    """(B, T) mask -> (B, ceil(T/2)) mask with ceil(length/2) real positions per row."""
    lengths = halve(mask.sum(-1))
    width = halve(mask.shape[1])
    return (torch.arange(width, device=mask.device)[None, :] < lengths[:, None]).to(mask.dtype)


class LengthAdapter(nn.Module):
    """Speech hidden states (B, T, speech_dim) -> text-model inputs (B, ceil(ceil(T/2)/2), text_dim)."""

    def __init__(self, speech_dim: int, text_dim: int, ffn_mult: int = 4, dropout: float = 0.1):
        super().__init__()
        self.speech_dim, self.text_dim = speech_dim, text_dim
        self.ffn_in = ResidualFFN(speech_dim, ffn_mult, dropout)
        self.conv1 = ConvGLU(speech_dim, text_dim)
        self.ffn_mid = ResidualFFN(text_dim, ffn_mult, dropout)
        self.conv2 = ConvGLU(text_dim, text_dim)

    @staticmethod
    def output_lengths(lengths):
        """Adapter positions for ``lengths`` speech-encoder positions: ceil(ceil(T / 2) / 2)."""
        return halve(halve(lengths))

    @torch.no_grad()
    def init_as_subsampling_(self, gate_bias: float = 8.0) -> None:
        """Start as a near pass-through that keeps every 4th speech state: residual FFNs off (zero output
        layer), each convolution the identity on its centre tap with the GLU gate open. The output is the
        speech states, normalised per position, so language blocks pretrained on this speech encoder's
        states (Whisper's own decoder) can read them from the first step. (Averaging neighbours instead
        of skipping them reads worse to Whisper's decoder: 15.8 vs 12.6 nats/token on mini dev.)
        Raises ValueError unless speech_dim == text_dim."""
        if self.speech_dim != self.text_dim:
            raise ValueError(f"a pass-through length adapter needs equal widths, got {self.speech_dim} -> {self.text_dim}")
        eye = torch.eye(self.text_dim)
        for ffn in (self.ffn_in, self.ffn_mid):
            ffn.ffn[-1].weight.zero_()
            ffn.ffn[-1].bias.zero_()
        for glu in (self.conv1, self.conv2):
            weight, bias = glu.conv.weight, glu.conv.bias  # (2 d, d, 3): value half, then gate half
            weight.zero_()
            weight[: self.text_dim, :, 1] = eye
            bias.zero_()
            bias[self.text_dim:] = gate_bias

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, speech_dim), mask (B, T) -> (B, T'', text_dim), mask (B, T''), T'' = ceil(ceil(T/2)/2).

        Raises ValueError when the input width is not ``speech_dim``.
        """
        if x.shape[-1] != self.speech_dim:
            raise ValueError(f"length adapter expects width {self.speech_dim}, got {x.shape[-1]}")
        x = self.ffn_in(x) * mask[..., None].to(x.dtype)
        x = self.conv1(x)
        mask = downsample_mask(mask)
        x = self.ffn_mid(x) * mask[..., None].to(x.dtype)
        x = self.conv2(x)
        mask = downsample_mask(mask)
        return x * mask[..., None].to(x.dtype), mask

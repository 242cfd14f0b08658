"""Memoised frozen speech blocks: each utterance goes through the speech encoder once per run.

When the speech blocks stay frozen for a whole run (and have no dropout), their output for an
utterance never changes, yet the training loop recomputes it every epoch: for a real Whisper-base on
two CPU cores that is most of a small run's time. :func:`cache_speech_encoder` makes the encoder
return the stored output for utterances it has seen, keyed by the bytes of their real (unpadded)
input. The speech encoders are padding-invariant (an utterance gives the same output alone or
batched), so a stored output is the one a fresh forward would give.

The cache is used only while gradients are off (frozen speech blocks during training, or decoding);
with gradients on the encoder runs as usual. Output memory: T' x D floats per utterance (Whisper-base,
5 s: 250 x 512 x 4 B = 0.5 MB), held in a least-recently-used store bounded by a byte budget: an evicted
utterance is encoded again, so a corpus of any size fits.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from comsl.lru import ByteLRU


class SpeechEncoderCache:
    """Replacement ``forward`` of a speech encoder ``(speech, mask) -> (hidden (B, T', D), mask (B, T'))``
    that remembers each utterance's output, within ``max_bytes``. The module, its parameters and state
    dict are unchanged."""

    def __init__(self, encoder: nn.Module, max_bytes: int):
        self.encoder = encoder
        # time is the last axis of log-mel (B, C, T) and waveform (B, S) input, axis 1 of fbank (B, T, 160)
        self.time_axis = 1 if getattr(encoder, "kind", None) == "w2v_bert" else -1
        self.forward_uncached = encoder.forward
        self.store = ByteLRU(max_bytes)
        self.hits = 0
        self.misses = 0

    def key(self, speech: torch.Tensor, length: int) -> bytes:
        """Digest of one utterance's real input: speech (C, T) log-mel, (T, 160) fbank or (S,) waveform."""
        axis = 0 if self.time_axis == 1 else -1
        real = speech.narrow(axis, 0, length).detach().to("cpu", torch.float32).contiguous()
        return hashlib.blake2b(real.numpy().tobytes(), digest_size=16).digest() + length.to_bytes(4, "little")

    def __call__(self, speech: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """speech (B, C, T) or (B, S), mask (B, T|S) -> hidden (B, T', D), mask (B, T')."""
        if torch.is_grad_enabled():
            return self.forward_uncached(speech, mask)
        lengths = mask.sum(-1).tolist()
        keys = [self.key(speech[i], int(n)) for i, n in enumerate(lengths)]
        # this call's rows are kept here: storing one may evict another of the same batch
        found = {k: self.store.get(k) for k in keys}
        missing = [i for i, k in enumerate(keys) if found[k] is None]
        if missing:
            longest = int(max(lengths[i] for i in missing))
            sub = speech[missing].narrow(self.time_axis, 0, longest)
            sub_hidden, sub_mask = self.forward_uncached(sub, mask[missing][:, :longest])
            for row, i in enumerate(missing):
                n_out = int(sub_mask[row].sum())
                found[keys[i]] = sub_hidden[row, :n_out].detach().clone()
                self.store.put(keys[i], found[keys[i]])
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        rows = [found[k] for k in keys]
        # the padded output length is what a forward over the full padded batch would give
        width = self._output_width(speech, mask, rows)
        hidden = rows[0].new_zeros(len(rows), width, rows[0].shape[-1])
        out_mask = mask.new_zeros(len(rows), width)
        for i, h in enumerate(rows):
            hidden[i, : h.shape[0]] = h
            out_mask[i, : h.shape[0]] = 1
        return hidden, out_mask

    def _output_width(self, speech: torch.Tensor, mask: torch.Tensor, rows: list[torch.Tensor]) -> int:
        lengths_fn = getattr(self.encoder, "output_lengths", None)
        if lengths_fn is not None:
            return int(lengths_fn(torch.tensor([mask.shape[-1]]))[0])
        return max(h.shape[0] for h in rows)


def cache_speech_encoder(model: nn.Module, max_bytes: int = 2 << 30) -> SpeechEncoderCache:
    """Install a :class:`SpeechEncoderCache` of ``max_bytes`` on ``model.speech_encoder`` (instance-level
    ``forward``, so parameter names and checkpoints stay as they are) and return it. Only valid while the speech
    blocks' weights do not change; the caller checks that (see ``train.cache_frozen_speech``)."""
    encoder = model.speech_encoder
    if isinstance(encoder.forward, SpeechEncoderCache):
        return encoder.forward
    cache = SpeechEncoderCache(encoder, max_bytes)
    encoder.forward = cache
    return cache

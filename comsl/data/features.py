"""Speech front ends applied batched in the collator: Whisper log-mel, normalised waveform, w2v-BERT fbank.

Every front end maps padded waveforms ``(B, S)`` plus their real lengths ``(B,)`` to features and a
mask that is 1 on real frames. None pads to 30 s: the output length follows the longest utterance.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from comsl.data.audio import SAMPLING_RATE
from comsl.errors import ConfigError


class WhisperLogMel(nn.Module):
    """Whisper's log-mel spectrogram, batched, on real lengths.

    Equals ``WhisperFeatureExtractor(feature_size=n_mels)`` called on each utterance alone
    (``padding="longest"``): per utterance, T_i = len_i // 160 frames (the extractor drops the
    last STFT frame), the log floor is its own max - 8 over its real frames, and the frames near
    its end see the same reflection padding as a lone utterance (so batching does not change them).
    """

    def __init__(self, n_mels: int = 80, n_fft: int = 400, hop_length: int = 160,
                 sampling_rate: int = SAMPLING_RATE):
        super().__init__()
        # transformers' own filter bank, so the numbers match the extractor exactly.
        from transformers.audio_utils import mel_filter_bank

        self.n_mels = n_mels
        self.n_fft = n_fft
        self.hop_length = hop_length
        filters = mel_filter_bank(
            num_frequency_bins=1 + n_fft // 2, num_mel_filters=n_mels, min_frequency=0.0,
            max_frequency=8000.0, sampling_rate=sampling_rate, norm="slaney", mel_scale="slaney",
        )
        self.register_buffer("mel_filters", torch.from_numpy(filters.T.astype(np.float32)), persistent=False)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def num_frames(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frames per utterance for sample lengths ``(B,)``."""
        return lengths // self.hop_length

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """waveforms (B, S) float, lengths (B,) long -> features (B, n_mels, T), mask (B, T) long.

        T = max(lengths) // 160. Padded frames hold each utterance's floor value ((max - 8 + 4) / 4),
        what Whisper sees for silence.
        """
        waveforms = waveforms.to(torch.float32)
        lengths = lengths.to(device=waveforms.device, dtype=torch.long)
        batch, width = waveforms.shape
        half = self.n_fft // 2
        # Continue each utterance past its end with its reflection (as torch.stft's reflect pad
        # does for a lone utterance); zero padding would change its last frames.
        real = torch.arange(width, device=waveforms.device)[None, :] < lengths[:, None]
        x = torch.cat([waveforms * real, waveforms.new_zeros(batch, half)], dim=1)
        k = torch.arange(half, device=x.device)[None, :]
        src = (lengths[:, None] - 2 - k).clamp(min=0)
        x.scatter_(1, lengths[:, None] + k, torch.gather(x, 1, src))

        stft = torch.stft(x, self.n_fft, self.hop_length, window=self.window, return_complex=True)
        n_frames = self.num_frames(lengths)
        t_max = int(n_frames.max().item()) if batch else 0
        # |z|^2 from real and imaginary parts: complex abs() takes a square root first (3x slower).
        stft = stft[..., :t_max]
        power = stft.real.pow(2) + stft.imag.pow(2)
        mel = torch.matmul(self.mel_filters, power)  # (B, n_mels, T)
        log_spec = mel.clamp(min=1e-10).log10()

        mask = torch.arange(t_max, device=x.device)[None, :] < n_frames[:, None]
        masked = log_spec.masked_fill(~mask[:, None, :], float("-inf"))
        max_val = masked.amax(dim=(1, 2), keepdim=True)
        floor = max_val - 8.0
        log_spec = torch.maximum(log_spec, floor)
        log_spec = torch.where(mask[:, None, :], log_spec, floor.expand_as(log_spec))
        return (log_spec + 4.0) / 4.0, mask.long()


class NormalizedWaveform(nn.Module):
    """Zero-mean unit-variance waveform per utterance over its real samples (wav2vec 2.0 / HuBERT).

    Matches ``Wav2Vec2FeatureExtractor(do_normalize=True)``: (x - mean) / sqrt(var + 1e-7).
    """

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """waveforms (B, S), lengths (B,) -> normalised (B, S) with zeros past each end, mask (B, S) long."""
        return normalize_waveform(waveforms, lengths)


def normalize_waveform(waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """See NormalizedWaveform: (B, S), (B,) -> (B, S) normalised, (B, S) long mask."""
    waveforms = waveforms.to(torch.float32)
    lengths = lengths.to(device=waveforms.device, dtype=torch.long)
    mask = torch.arange(waveforms.shape[1], device=waveforms.device)[None, :] < lengths[:, None]
    m = mask.to(waveforms.dtype)
    n = lengths.clamp(min=1).to(waveforms.dtype)[:, None]
    mean = (waveforms * m).sum(1, keepdim=True) / n
    var = (((waveforms - mean) * m) ** 2).sum(1, keepdim=True) / n
    out = (waveforms - mean) / torch.sqrt(var + 1e-7)
    return out * m, mask.long()


class W2vBertFbank(nn.Module):
    """w2v-BERT 2.0 input: SeamlessM4T's 80-bin fbank with stride 2 -> (B, T, 160), per utterance.

    Calls transformers' SeamlessM4TFeatureExtractor on each utterance's real samples (it is
    per-utterance normalised, so padding must not enter it), then pads.
    """

    def __init__(self):
        super().__init__()
        from transformers import SeamlessM4TFeatureExtractor

        self.extractor = SeamlessM4TFeatureExtractor()

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """waveforms (B, S), lengths (B,) -> features (B, T, 160), mask (B, T) long."""
        feats = []
        for wav, n in zip(waveforms.to(torch.float32).cpu().numpy(), lengths.tolist()):
            out = self.extractor(wav[: int(n)], sampling_rate=SAMPLING_RATE, return_tensors="np",
                                 padding=False, return_attention_mask=False)
            feats.append(torch.from_numpy(np.asarray(out["input_features"][0], dtype=np.float32)))
        t_max = max((f.shape[0] for f in feats), default=0)
        dim = feats[0].shape[1] if feats else 160
        out = torch.zeros(len(feats), t_max, dim)
        mask = torch.zeros(len(feats), t_max, dtype=torch.long)
        for i, f in enumerate(feats):
            out[i, : f.shape[0]] = f
            mask[i, : f.shape[0]] = 1
        return out.to(waveforms.device), mask.to(waveforms.device)


FRONTENDS = ("whisper_log_mel", "waveform", "w2v_bert_fbank")


def build_frontend(kind: str, **kw) -> nn.Module:
    """Front end named by ``model.config.speech_frontend``; kwargs: ``n_mels`` for whisper_log_mel.

    Raises ConfigError for an unknown kind, listing the valid ones.
    """
    if kind == "whisper_log_mel":
        return WhisperLogMel(n_mels=int(kw.get("n_mels", kw.get("num_mel_bins", 80))))
    if kind == "waveform":
        return NormalizedWaveform()
    if kind == "w2v_bert_fbank":
        return W2vBertFbank()
    raise ConfigError(f"speech_frontend: unknown kind {kind!r}; expected one of {', '.join(FRONTENDS)}")

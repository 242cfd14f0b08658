"""Speech blocks: pretrained speech encoders behind one interface.

Every wrapper maps ``(speech, speech_mask)`` to ``(hidden (B, T, D), mask (B, T))`` and accepts
variable-length input. Whisper in particular runs on the real length of the batch: its positional
table is sliced instead of padding every utterance to 30 s (transformers' ``WhisperEncoder`` insists
on exactly 3000 frames, which costs ~10x on short clips).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import (
    HubertConfig,
    HubertModel,
    PreTrainedConfig,
    Wav2Vec2BertConfig,
    Wav2Vec2BertModel,
    Wav2Vec2Config,
    Wav2Vec2Model,
    WhisperConfig,
)
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from comsl.models.length_adapter import halve

# encoder family -> (config class, input front end the data pipeline must produce)
SPEECH_ENCODERS: dict[str, tuple[type[PreTrainedConfig], str]] = {
    "whisper": (WhisperConfig, "whisper_log_mel"),
    "wav2vec2": (Wav2Vec2Config, "waveform"),
    "hubert": (HubertConfig, "waveform"),
    "w2v_bert": (Wav2Vec2BertConfig, "w2v_bert_fbank"),
}

# Frames per second of each front end's *input*, used to cap the input length.
_INPUT_RATE = {"whisper_log_mel": 100, "waveform": 16000, "w2v_bert_fbank": 50}


def padding_bias(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive attention bias (B, 1, 1, T) from a (B, T) mask of 1 = real, 0 = pad."""
    return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


class WhisperSpeechEncoder(nn.Module):
    """Whisper's encoder on variable-length log-mel input with a padding mask.

    Holds a transformers ``WhisperEncoder`` as ``self.encoder`` (so pretrained weights load by name)
    but runs its own forward: the convolutions and layers see the batch's real length, padded frames
    are zeroed between the convolutions and masked in attention, so an utterance gives the same output
    alone or batched with longer ones.
    """

    def __init__(self, config: WhisperConfig, max_seconds: float = 11.0):
        super().__init__()
        self.config = config
        self.encoder = WhisperEncoder(config)
        # 100 log-mel frames/s, conv stride 2 -> 50 encoder positions per second.
        self.max_frames = min(int(round(max_seconds * 100)), 2 * config.max_source_positions)
        self.hidden_size = config.d_model

    @staticmethod
    def output_lengths(lengths):
        """Encoder positions for ``lengths`` mel frames (ints or tensors): conv2 (k=3, s=2, p=1) halves them."""
        return halve(lengths)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features (B, n_mels, T), mask (B, T) -> hidden (B, ceil(T/2), D), mask (B, ceil(T/2)).

        Raises ValueError when T exceeds the configured maximum (``max_speech_seconds``).
        """
        if features.shape[-1] > self.max_frames:
            raise ValueError(
                f"speech input has {features.shape[-1]} frames, more than the maximum {self.max_frames} "
                f"({self.max_frames / 100:.1f} s); filter long utterances in data preparation or raise "
                "model.max_speech_seconds"
            )
        enc = self.encoder
        in_mask = mask.to(features.dtype)[:, None, :]
        x = nn.functional.gelu(enc.conv1(features * in_mask))
        # zero padded positions so the strided conv sees what a lone utterance sees (zero padding)
        x = nn.functional.gelu(enc.conv2(x * in_mask))
        x = x.transpose(1, 2)
        out_mask = (torch.arange(x.shape[1], device=x.device)[None, :]
                    < self.output_lengths(mask.sum(-1))[:, None]).long()
        # the table's first T rows, through the module's forward (not .weight) so ZeRO-3 gathers it
        x = x + enc.embed_positions(torch.arange(x.shape[1], device=x.device))
        x = nn.functional.dropout(x, p=enc.dropout, training=self.training)
        bias = None if bool(out_mask.all()) else padding_bias(out_mask, x.dtype)  # no padding: fused SDPA
        for layer in enc.layers:
            if self.training and enc.layerdrop > 0 and torch.rand([]) < enc.layerdrop:
                continue
            x = layer(x, attention_mask=bias)
        return enc.layer_norm(x), out_mask


class Wav2Vec2StyleSpeechEncoder(nn.Module):
    """wav2vec2 / XLS-R, HuBERT and w2v-BERT 2.0 encoders (transformers models support masks natively)."""

    _MODELS = {"wav2vec2": Wav2Vec2Model, "hubert": HubertModel, "w2v_bert": Wav2Vec2BertModel}

    def __init__(self, kind: str, config: PreTrainedConfig, max_seconds: float = 11.0):
        super().__init__()
        self.kind = kind
        self.config = config
        self.encoder = self._MODELS[kind](config)
        self.max_frames = int(round(max_seconds * _INPUT_RATE[SPEECH_ENCODERS[kind][1]]))
        self.hidden_size = config.hidden_size

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        if self.kind == "w2v_bert":
            # no convolutional feature encoder; the optional adapter down-samples
            return self.encoder._get_feat_extract_output_lengths(lengths) if self.config.add_adapter else lengths
        return self.encoder._get_feat_extract_output_lengths(lengths)

    def forward(self, speech: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """speech (B, S) waveform or (B, T, 160) fbank, mask (B, S|T) -> hidden (B, T', D), mask (B, T')."""
        if speech.shape[1] > self.max_frames:
            raise ValueError(
                f"speech input has {speech.shape[1]} steps, more than the maximum {self.max_frames}; "
                "filter long utterances in data preparation or raise model.max_speech_seconds"
            )
        key = "input_features" if self.kind == "w2v_bert" else "input_values"
        hidden = self.encoder(**{key: speech}, attention_mask=mask).last_hidden_state
        lengths = self.output_lengths(mask.sum(-1)).clamp(max=hidden.shape[1])
        out_mask = (torch.arange(hidden.shape[1], device=hidden.device)[None, :] < lengths[:, None]).long()
        return hidden * out_mask[..., None].to(hidden.dtype), out_mask


def build_speech_encoder(kind: str, config: PreTrainedConfig, max_seconds: float) -> nn.Module:
    """Construct (no I/O) the speech-encoder wrapper for ``kind``; raises ValueError for unknown kinds."""
    if kind not in SPEECH_ENCODERS:
        raise ValueError(f"unknown speech encoder {kind!r}; choose one of {', '.join(SPEECH_ENCODERS)}")
    expected = SPEECH_ENCODERS[kind][0]
    if not isinstance(config, expected):
        raise ValueError(f"speech encoder {kind!r} needs a {expected.__name__}, got {type(config).__name__}")
    if kind == "whisper":
        return WhisperSpeechEncoder(config, max_seconds)
    return Wav2Vec2StyleSpeechEncoder(kind, config, max_seconds)

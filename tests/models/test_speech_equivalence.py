"""Our speech-encoder wrappers against transformers' own modules, so an upstream change shows here.

The Whisper wrapper runs its own forward (variable length + mask) over ``WhisperEncoder``'s modules; on
the input ``WhisperEncoder`` accepts (exactly ``2 * max_source_positions`` frames, no padding) both must
agree. The wav2vec2-style wrappers call the transformers model; their output lengths (read from a private
helper) must match the frames the model really produces.
"""

from __future__ import annotations

import pytest
import torch
from transformers import WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from comsl.models.build import TINY_SPEECH_ARCH
from comsl.models.speech_encoders import SPEECH_ENCODERS, build_speech_encoder


def test_whisper_wrapper_equals_transformers_whisper_encoder_on_30_s():
    config = WhisperConfig(**{**TINY_SPEECH_ARCH["whisper"], "max_source_positions": 1500})
    torch.manual_seed(0)
    ours = build_speech_encoder("whisper", config, max_seconds=30.0).eval()
    features = torch.randn(2, config.num_mel_bins, 3000)
    with torch.no_grad():
        want = WhisperEncoder.forward(ours.encoder, features).last_hidden_state
        got, mask = ours(features, torch.ones(2, 3000, dtype=torch.long))
    assert got.shape == want.shape == (2, 1500, config.d_model) and bool(mask.all())
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["wav2vec2", "hubert", "w2v_bert"])
def test_wav2vec2_style_wrappers_equal_the_model_and_count_its_frames(kind):
    config = SPEECH_ENCODERS[kind][0](**TINY_SPEECH_ARCH[kind])
    torch.manual_seed(0)
    ours = build_speech_encoder(kind, config, max_seconds=11.0).eval()
    key, lengths = ("input_features", [7, 20, 33]) if kind == "w2v_bert" else ("input_values", [400, 1601, 4100])
    for n in lengths:
        speech = torch.randn(1, n, 160) if kind == "w2v_bert" else torch.randn(1, n)
        mask = torch.ones(1, n, dtype=torch.long)
        with torch.no_grad():
            want = ours.encoder(**{key: speech}, attention_mask=mask).last_hidden_state
            got, out_mask = ours(speech, mask)
        assert int(ours.output_lengths(torch.tensor([n]))[0]) == want.shape[1] == int(out_mask.sum())
        torch.testing.assert_close(got, want)

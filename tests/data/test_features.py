import numpy as np
import pytest
import torch
from transformers import Wav2Vec2FeatureExtractor, WhisperFeatureExtractor

from comsl.data.features import WhisperLogMel, build_frontend
from comsl.errors import ConfigError

# Lengths: not multiples of the hop, exact multiples, a sub-second one; quiet and loud parts so the
# per-utterance max - 8 floor is active.
LENGTHS = [16000 * 3 + 77, 16000, 5000, 160 * 10, 321]


def _waves():
    rng = np.random.default_rng(0)
    out = []
    for n in LENGTHS:
        t = np.arange(n)
        out.append((rng.standard_normal(n) * 0.1 * np.sin(t / 700.0) ** 4).astype(np.float32))
    return out


def _pad(waves):
    x = torch.zeros(len(waves), max(map(len, waves)))
    for i, w in enumerate(waves):
        x[i, : len(w)] = torch.from_numpy(w)
    return x, torch.tensor([len(w) for w in waves])


@pytest.mark.parametrize("n_mels", [80, 128])
def test_whisper_log_mel_equals_extractor_on_real_frames(n_mels):
    waves = _waves()
    feats, mask = WhisperLogMel(n_mels)(*_pad(waves))
    assert feats.shape == (len(waves), n_mels, LENGTHS[0] // 160)
    assert mask.sum(1).tolist() == [n // 160 for n in LENGTHS]
    extractor = WhisperFeatureExtractor(feature_size=n_mels)
    for i, w in enumerate(waves):
        ref = extractor(w, sampling_rate=16000, padding="longest", return_tensors="np")["input_features"][0]
        assert ref.shape[1] == LENGTHS[i] // 160
        np.testing.assert_allclose(feats[i, :, : ref.shape[1]].numpy(), ref, atol=1e-4, rtol=0)
    # The 30 s padded extractor output agrees too, away from the last two frames (which it computes on zeros).
    ref30 = extractor(waves[1], sampling_rate=16000, return_tensors="np")["input_features"][0]
    np.testing.assert_allclose(feats[1, :, :98].numpy(), ref30[:, :98], atol=1e-4, rtol=0)


def test_whisper_log_mel_is_padding_invariant():
    waves = _waves()
    m = WhisperLogMel()
    batched, _ = m(*_pad(waves))
    alone, _ = m(*_pad([waves[2]]))
    torch.testing.assert_close(batched[2, :, : alone.shape[2]], alone[0], atol=1e-5, rtol=0)


def test_waveform_frontend_matches_wav2vec2_extractor():
    waves = _waves()[:3]
    out, mask = build_frontend("waveform")(*_pad(waves))
    extractor = Wav2Vec2FeatureExtractor(do_normalize=True)
    for i, w in enumerate(waves):
        ref = extractor(w, sampling_rate=16000, return_tensors="np")["input_values"][0]
        np.testing.assert_allclose(out[i, : len(w)].numpy(), ref, atol=1e-4)
        assert mask[i].sum() == len(w) and float(out[i, len(w):].abs().sum()) == 0.0


def test_w2v_bert_fbank_shapes_and_factory_errors():
    waves = _waves()[1:3]
    feats, mask = build_frontend("w2v_bert_fbank")(*_pad(waves))
    assert feats.shape[0] == 2 and feats.shape[2] == 160
    assert mask.sum(1).tolist()[0] == feats.shape[1] > mask.sum(1).tolist()[1] > 0
    with pytest.raises(ConfigError, match="unknown kind 'mfcc'"):
        build_frontend("mfcc")

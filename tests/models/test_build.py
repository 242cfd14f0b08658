"""Building from local pretrained directories: strict loading, weights unchanged, clear errors."""

from __future__ import annotations

import pytest
import torch
from transformers import MBartConfig, MBartForConditionalGeneration, Wav2Vec2Config, Wav2Vec2Model, \
    WhisperConfig, WhisperForConditionalGeneration

from comsl.config import ModelConfig
from comsl.errors import CheckpointError, ConfigError
from comsl.models.build import TINY_SPEECH_ARCH, TINY_TEXT_ARCH, build_model


@pytest.fixture
def whisper_dir(tmp_path):
    torch.manual_seed(1)
    model = WhisperForConditionalGeneration(WhisperConfig(**TINY_SPEECH_ARCH["whisper"]))
    model.save_pretrained(tmp_path / "whisper")
    return tmp_path / "whisper", model


@pytest.fixture
def mbart_dir(tmp_path, tokenizer):
    """A tiny mBART saved by transformers whose vocabulary lacks the last two codes (ca_ES, cy_GB)."""
    torch.manual_seed(2)
    cfg = MBartConfig(vocab_size=len(tokenizer) - 2, pad_token_id=tokenizer.pad_token_id,
                      eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
                      decoder_start_token_id=tokenizer.eos_token_id, scale_embedding=True, **TINY_TEXT_ARCH)
    model = MBartForConditionalGeneration(cfg)
    model.save_pretrained(tmp_path / "mbart")
    tokenizer.save_pretrained(tmp_path / "mbart")
    return tmp_path / "mbart", model


def test_pretrained_weights_end_up_unchanged(whisper_dir, mbart_dir, tokenizer):
    (wdir, whisper), (mdir, mbart) = whisper_dir, mbart_dir
    cfg = ModelConfig(speech_pretrained=str(wdir), text_pretrained=str(mdir))
    model = build_model(cfg, tokenizer)
    for name, value in whisper.model.encoder.state_dict().items():
        assert torch.equal(model.speech_encoder.encoder.state_dict()[name], value), name
    text_state = model.text_model.state_dict()
    for name, value in mbart.state_dict().items():
        if "embed_tokens" in name or name in ("model.shared.weight", "lm_head.weight", "final_logits_bias"):
            continue
        assert torch.equal(text_state[name], value), name
    # the vocabulary grew by the two added language codes; the pretrained rows are untouched
    emb = model.text_model.get_input_embeddings().weight
    assert emb.shape[0] == len(tokenizer)
    assert torch.equal(emb[: len(tokenizer) - 2], mbart.model.shared.weight)
    assert model.text_model.lm_head.weight is emb  # still tied after resizing


def test_wrong_family_is_a_config_error(tmp_path, tokenizer):
    Wav2Vec2Model(Wav2Vec2Config(**TINY_SPEECH_ARCH["wav2vec2"])).save_pretrained(tmp_path / "w2v")
    cfg = ModelConfig(speech_pretrained=str(tmp_path / "w2v"), text_arch=dict(TINY_TEXT_ARCH))
    with pytest.raises(ConfigError, match="holds a 'wav2vec2' model, but model.speech_encoder is 'whisper'"):
        build_model(cfg, tokenizer)


def test_not_a_model_directory(tmp_path, tokenizer):
    with pytest.raises(ConfigError, match="model.speech_pretrained: .* not a Hugging Face model directory"):
        build_model(ModelConfig(speech_pretrained=str(tmp_path)), tokenizer)


def test_missing_keys_are_listed(whisper_dir, tokenizer):
    from safetensors.torch import load_file, save_file

    wdir, _ = whisper_dir
    state = load_file(wdir / "model.safetensors")
    del state["model.encoder.layers.1.fc1.weight"]
    save_file(state, wdir / "model.safetensors")
    cfg = ModelConfig(speech_pretrained=str(wdir), text_arch=dict(TINY_TEXT_ARCH))
    with pytest.raises(CheckpointError, match="missing: layers.1.fc1.weight"):
        build_model(cfg, tokenizer)


def test_shape_mismatch_is_reported(tmp_path, tokenizer):
    arch = dict(TINY_SPEECH_ARCH["whisper"], encoder_ffn_dim=48)
    WhisperForConditionalGeneration(WhisperConfig(**arch)).save_pretrained(tmp_path / "w")
    cfg = ModelConfig(speech_pretrained=str(tmp_path / "w"), speech_arch={"encoder_ffn_dim": 64},
                      text_arch=dict(TINY_TEXT_ARCH))
    with pytest.raises(CheckpointError, match="shape mismatch: layers.0.fc1.bias: checkpoint \\(48,\\) vs model \\(64,\\)"):
        build_model(cfg, tokenizer)


def test_too_long_speech_for_the_text_model_fails_at_construction(tokenizer):
    cfg = ModelConfig(speech_arch=dict(TINY_SPEECH_ARCH["whisper"]),
                      text_arch=dict(TINY_TEXT_ARCH, max_position_embeddings=64))
    with pytest.raises(ConfigError, match="139 positions but the text model has max_position_embeddings=64"):
        build_model(cfg, tokenizer)


def test_speech_part_reads_only_the_encoder_tensors(whisper_dir, tokenizer, monkeypatch):
    """Whisper's decoder is in the checkpoint but never read into memory."""
    import comsl.models.build as build

    read: list[str] = []

    real_open = build.safe_open

    class Recording:
        def __init__(self, *args, **kwargs):
            self.inner = real_open(*args, **kwargs)

        def __enter__(self):
            self.file = self.inner.__enter__()
            return self

        def __exit__(self, *exc):
            return self.inner.__exit__(*exc)

        def keys(self):
            return self.file.keys()

        def get_slice(self, key):
            return self.file.get_slice(key)

        def get_tensor(self, key):
            read.append(key)
            return self.file.get_tensor(key)

    monkeypatch.setattr(build, "safe_open", Recording)
    wdir, whisper = whisper_dir
    model = build_model(ModelConfig(speech_pretrained=str(wdir), text_arch=dict(TINY_TEXT_ARCH)), tokenizer)
    encoder_keys = {k for k in whisper.state_dict() if k.startswith("model.encoder.")}
    assert read and set(read) == encoder_keys and len(read) == len(encoder_keys)
    for name, value in whisper.model.encoder.state_dict().items():
        assert torch.equal(model.speech_encoder.encoder.state_dict()[name], value), name

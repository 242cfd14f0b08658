"""Language blocks from Whisper (the mini recipe's mini/whisper_text.py) and the pass-through length adapter."""

from __future__ import annotations

import pytest
import torch
from transformers import MBartForConditionalGeneration, WhisperForConditionalGeneration

from comsl.config import ModelConfig
from comsl.errors import CheckpointError, ConfigError
from comsl.models.build import build_model
from mini.whisper_text import ENCODER_POSITION_SCALE, main, whisper_to_mbart
from tests.helpers import task_loss

from .conftest import LETTERS, TOKEN_ID


@pytest.fixture(scope="module")
def converted(tiny_hf, tokenizer, tmp_path_factory):
    out = tmp_path_factory.mktemp("wt") / "text"
    summary = whisper_to_mbart(tiny_hf, tokenizer.name_or_path, out, encoder_layers=1)
    return out, summary


def _models(tiny_hf, converted):
    whisper = WhisperForConditionalGeneration.from_pretrained(tiny_hf).eval()
    mbart = MBartForConditionalGeneration.from_pretrained(converted[0]).eval()
    return whisper, mbart


def test_decoder_is_whispers_decoder(tiny_hf, converted):
    """Given the same input vectors and encoder states, the decoder stacks agree exactly (the embedding
    LayerNorm, which Whisper does not have, taken out)."""
    whisper, mbart = _models(tiny_hf, converted)
    torch.manual_seed(0)
    embeds, enc = torch.randn(2, 7, 16), torch.randn(2, 9, 16)
    mbart.model.decoder.layernorm_embedding = torch.nn.Identity()
    with torch.no_grad():
        want = whisper.model.decoder(inputs_embeds=embeds, encoder_hidden_states=enc).last_hidden_state
        got = mbart.model.decoder(inputs_embeds=embeds, encoder_hidden_states=enc).last_hidden_state
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert mbart.config.scale_embedding is False
    assert mbart.config.decoder_layers == whisper.config.decoder_layers


def test_embeddings_come_from_whispers_tokens(tiny_hf, tokenizer, converted):
    whisper, mbart = _models(tiny_hf, converted)
    w_emb, emb = whisper.model.decoder.embed_tokens.weight, mbart.model.shared.weight
    vocab = tokenizer.get_vocab()
    # specials and language codes map to Whisper's special tokens
    for piece, wtoken in (("</s>", "<|endoftext|>"), ("<s>", "<|startoftranscript|>"), ("de_DE", "<|de|>"),
                          ("fr_XX", "<|fr|>"), ("en_XX", "<|notimestamps|>")):
        torch.testing.assert_close(emb[vocab[piece]], w_emb[TOKEN_ID[wtoken]])
    # a word piece is the mean of its Whisper tokens: "▁dog" -> "Ġ", "d", "o", "g" (the tiny BPE has no merges)
    ids = [LETTERS.index(c) for c in ("Ġ", "d", "o", "g")]
    torch.testing.assert_close(emb[vocab["\u2581dog"]], w_emb[ids].mean(0))
    # the LM head is tied to the shared embedding
    assert mbart.lm_head.weight.data_ptr() == emb.data_ptr()
    assert converted[1].vocab_size == len(tokenizer)


def test_encoder_layers_start_as_pass_through(tiny_hf, converted):
    """The copied encoder layers start with closed residual branches: the encoder is its two LayerNorms
    over (input + scaled Whisper encoder positions)."""
    whisper, mbart = _models(tiny_hf, converted)
    enc = mbart.model.encoder
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        got = enc(inputs_embeds=x).last_hidden_state
        pos = ENCODER_POSITION_SCALE * whisper.model.encoder.embed_positions.weight[:5]
        want = enc.layer_norm(enc.layernorm_embedding(x + pos))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # q/k/v come from Whisper's top encoder layer
    torch.testing.assert_close(enc.layers[0].self_attn.q_proj.weight,
                               whisper.model.encoder.layers[-1].self_attn.q_proj.weight)


def test_composite_with_subsampling_adapter(tiny_hf, tokenizer, converted):
    """Whisper speech blocks + converted language blocks + a pass-through adapter: the adapter output
    is the speech states normalised per position, every 4th one."""
    cfg = ModelConfig(speech_encoder="whisper", speech_pretrained=str(tiny_hf), text_model="mbart",
                      text_pretrained=str(converted[0]), adapter_init="subsample", max_speech_seconds=2.0)
    model = build_model(cfg, tokenizer).eval()
    x = torch.randn(2, 10, 16)
    mask = torch.ones(2, 10, dtype=torch.long)
    with torch.no_grad():
        out, out_mask = model.adapter(x, mask)
    want = torch.nn.functional.layer_norm(x, (16,))[:, ::4] * torch.sigmoid(torch.tensor(8.0)) ** 2
    torch.testing.assert_close(out, want, rtol=1e-3, atol=1e-3)
    assert out_mask.shape == (2, 3)
    # and it trains: one step of ST loss on random features runs and is finite
    speech = torch.randn(1, 80 if model.config.num_mel_bins is None else model.config.num_mel_bins, 200)
    tgt = torch.tensor([[tokenizer.convert_tokens_to_ids("en_XX"), 10, 11, tokenizer.eos_token_id]])
    batch = dict(speech=speech, speech_mask=torch.ones(1, 200, dtype=torch.long),
                 src_lang_ids=torch.tensor([tokenizer.convert_tokens_to_ids("fr_XX")]), transcript_ids=tgt,
                 transcript_mask=torch.ones_like(tgt), translation_ids=tgt, translation_mask=torch.ones_like(tgt))
    loss = task_loss(tokenizer)(model, batch)
    assert torch.isfinite(loss)


def test_subsampling_adapter_needs_equal_widths(tokenizer):
    from comsl.models.build import TINY_SPEECH_ARCH, TINY_TEXT_ARCH

    cfg = ModelConfig(speech_arch=dict(TINY_SPEECH_ARCH["whisper"], d_model=24), text_arch=dict(TINY_TEXT_ARCH),
                      adapter_init="subsample")
    with pytest.raises(ConfigError, match="adapter_init.*24 -> 32"):
        build_model(cfg, tokenizer)


def test_cli_and_errors(tiny_hf, tokenizer, tmp_path, capsys):
    out = tmp_path / "text"
    assert main([str(tiny_hf), str(out), "--tokenizer", tokenizer.name_or_path, "--encoder-layers", "2"]) == 0
    assert "2 encoder + 2 decoder layers" in capsys.readouterr().out
    assert (out / "tokenizer.json").is_file() and (out / "LICENSE").is_file()
    assert main([str(tiny_hf), str(out), "--tokenizer", tokenizer.name_or_path]) == 2
    assert "already holds a model (config.json); pass --overwrite" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="not a Hugging Face Whisper"):
        whisper_to_mbart(out, tokenizer.name_or_path, tmp_path / "c")  # an mBART directory, not Whisper
    with pytest.raises(CheckpointError, match="has 2 encoder and 2 decoder layers; asked for 3 and 2"):
        whisper_to_mbart(tiny_hf, tokenizer.name_or_path, tmp_path / "d", encoder_layers=3)


def test_unknown_adapter_init_is_named(tmp_path):
    from comsl.config import load_config

    cfg = tmp_path / "c.yaml"
    cfg.write_text("data:\n  train_manifest: x.tsv\n")
    with pytest.raises(ConfigError, match="model.adapter_init: expected one of 'random' \\| 'subsample', got 'pool'"):
        load_config(cfg, ["model.adapter_init=pool"])

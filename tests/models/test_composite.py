"""The composite on tiny backbones: every pair builds, trains, round-trips; padding invariance; golden forward."""

from __future__ import annotations

import pytest
import torch

from comsl.models import ComSLModel
from comsl.models.encodings import Plan
from tests.helpers import LENGTHS, speech_batch, speech_input, task_loss, text_batch

PAIRS = [(s, t) for s in ("whisper", "wav2vec2", "hubert", "w2v_bert") for t in ("mbart", "m2m100", "nllb")]


@pytest.mark.parametrize("speech,text", PAIRS)
def test_every_backbone_pair_trains_and_round_trips(speech, text, make_model, tokenizer, tmp_path):
    model = make_model(speech, text)
    batch = speech_batch(tokenizer, *speech_input(speech, LENGTHS[speech]))
    model.train()
    loss = task_loss(tokenizer)(model, batch)
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for n, p in model.named_parameters() if n.startswith("adapter.")]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)

    model.eval()
    model.save_pretrained(tmp_path)
    loaded = ComSLModel.from_pretrained(tmp_path).eval()
    assert loaded.tokenizer is not None and len(loaded.tokenizer) == len(tokenizer)
    with torch.no_grad():
        a = model(batch, Plan(st=True)).states["st"]
        b = loaded(batch, Plan(st=True)).states["st"]
    assert torch.equal(a, b)


@pytest.mark.parametrize("speech", ["whisper", "wav2vec2", "w2v_bert"])
def test_padding_invariance_of_encoder_and_beam(speech, make_model, tokenizer):
    """An utterance alone and batched with a much longer one: same encoder states, same beam output."""
    model = make_model(speech)
    short, long_ = LENGTHS[speech][1], LENGTHS[speech][0] * 2
    x, mask = speech_input(speech, [long_, short], seed=3)
    if speech == "whisper":
        alone, alone_mask = x[1:, :, :short], mask[1:, :short]
    else:
        alone, alone_mask = x[1:, :short], mask[1:, :short]
    with torch.no_grad():
        batched = model.encode_speech(x, mask)
        single = model.encode_speech(alone, alone_mask)
    n = int(single.mask.sum())
    assert int(batched.mask[1].sum()) == n
    torch.testing.assert_close(batched.hidden[1, :n], single.hidden[0, :n], atol=1e-5, rtol=1e-5)
    en = tokenizer.convert_tokens_to_ids("en_XX")
    src = torch.tensor([tokenizer.convert_tokens_to_ids("fr_XX")] * 2)
    beams_b = model.generate_speech(x, mask, src, en, num_beams=5, max_new_tokens=12)
    beams_s = model.generate_speech(alone, alone_mask, src[:1], en, num_beams=5, max_new_tokens=12)
    seq_b = [t for t in beams_b[1].tolist() if t != tokenizer.pad_token_id]
    seq_s = [t for t in beams_s[0].tolist() if t != tokenizer.pad_token_id]
    assert seq_b == seq_s
    assert seq_s[:2] == [tokenizer.eos_token_id, en]  # decoder start, then the forced target language


def test_frozen_parts_get_no_gradient(make_model, tokenizer):
    model = make_model().train()
    model.set_trainable("speech_encoder", False)
    model.set_trainable("text_encoder", False)
    task_loss(tokenizer)(model, speech_batch(tokenizer, *speech_input("whisper", LENGTHS["whisper"]))).backward()
    for name, p in model.named_parameters():
        part = model.part_of(name)
        if part == "speech_encoder" or (part == "text_encoder" and "shared" not in name):
            assert p.grad is None, name
        elif p.requires_grad:
            assert p.grad is not None, name
    # the shared embedding follows the decoder, which is still trainable
    assert model.text_model.get_input_embeddings().weight.grad is not None


def test_speech_frozen_switch_skips_speech_backward(make_model, tokenizer):
    model = make_model().train()
    model.set_speech_frozen(True)
    task_loss(tokenizer)(model, speech_batch(tokenizer, *speech_input("whisper", LENGTHS["whisper"]))).backward()
    assert all(p.grad is None for p in model.speech_encoder.parameters())
    assert all(p.grad is not None for p in model.adapter.parameters())


@pytest.mark.parametrize("text", ["mbart", "m2m100"])
def test_task_losses_equal_transformers_own_forward(text, make_model, tokenizer):
    """ST, ASR and MT losses of the training forward (batched decodes, chunked LM head + cross-entropy)
    equal transformers' ``*ForConditionalGeneration`` forward with ``labels`` on the same encoder input."""
    model = make_model("whisper", text)
    batch = speech_batch(tokenizer, *speech_input("whisper", [230, 97], seed=1))
    with torch.no_grad():
        embeds, mask = model.speech_inputs_embeds(model.encode_speech(batch["speech"], batch["speech_mask"]),
                                                  batch["src_lang_ids"])
        for task, target, source in (("st", "translation", None), ("asr", "transcript", None),
                                     ("mt", "translation", "transcript")):
            dec_in, labels = model.teacher_forcing(batch[f"{target}_ids"], batch[f"{target}_mask"])
            inputs = (dict(input_ids=batch[f"{source}_ids"], attention_mask=batch[f"{source}_mask"]) if source
                      else dict(inputs_embeds=embeds, attention_mask=mask))
            want = model.text_model(**inputs, decoder_input_ids=dec_in, labels=labels).loss
            got = task_loss(tokenizer, task)(model, batch if source is None else
                                             {k: v for k, v in batch.items() if not k.startswith("speech")})
            assert float(got) == pytest.approx(float(want), rel=1e-6), task


def test_text_input_mt_path(make_model, tokenizer):
    model = make_model()
    tr, tr_mask, tg, tg_mask, _ = text_batch(tokenizer)
    batch = dict(transcript_ids=tr, transcript_mask=tr_mask, translation_ids=tg, translation_mask=tg_mask)
    assert torch.isfinite(task_loss(tokenizer, "mt")(model, batch))
    ids = model.generate_text(tr, tr_mask, tokenizer.convert_tokens_to_ids("en_XX"), num_beams=3, max_new_tokens=6)
    assert ids.shape[0] == 2 and ids.shape[1] <= 8


def test_too_long_speech_is_refused(make_model):
    model = make_model(max_speech_seconds=2.0)
    x, mask = speech_input("whisper", [201])
    with pytest.raises(ValueError, match="more than the maximum 200"):
        model.encode_speech(x, mask)


def test_unpadded_batches_pass_no_mask_and_equal_the_masked_path(make_model, tokenizer):
    """Without padding the text encoder, the decoder's cross-attention and Whisper's layers get no mask
    (SDPA's fused path); their outputs equal those of an all-ones mask."""
    model = make_model()
    x, mask = speech_input("whisper", [230, 230], seed=2)
    seen = []
    for module in (model.text_encoder, model.text_model.get_decoder()):
        module.register_forward_pre_hook(
            lambda m, args, kw: seen.append(kw.get("attention_mask", kw.get("encoder_attention_mask"))),
            with_kwargs=True)
    layer_masks = []
    model.speech_encoder.encoder.layers[0].register_forward_pre_hook(
        lambda m, args, kw: layer_masks.append(kw["attention_mask"]), with_kwargs=True)
    with torch.no_grad():
        enc = model.encode_speech(x, mask)
        embeds, emask = model.speech_inputs_embeds(enc, torch.tensor([5, 6]))
        fast = model.encode_embeds(embeds, emask).last_hidden_state
        dec_in = torch.tensor([[2, 5, 9, 11], [2, 5, 12, 13]])
        fast_dec = model.decode_hidden(dec_in, fast, emask)
        assert seen == [None, None] and layer_masks == [None]
        masked = model.text_encoder(inputs_embeds=embeds, attention_mask=emask).last_hidden_state
        masked_dec = model.text_model.get_decoder()(input_ids=dec_in, encoder_hidden_states=fast,
                                                    encoder_attention_mask=emask).last_hidden_state
        from comsl.models.speech_encoders import padding_bias
        layer = model.speech_encoder.encoder.layers[0]
        h = torch.randn(2, 115, 32)
        torch.testing.assert_close(layer(h, attention_mask=None),
                                   layer(h, attention_mask=padding_bias(torch.ones(2, 115), h.dtype)),
                                   rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(fast, masked, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(fast_dec, masked_dec, rtol=1e-6, atol=1e-6)
    with torch.no_grad():  # a padded batch still passes its mask
        padded = emask.clone()
        padded[1, -1] = 0
        model.encode_embeds(embeds, padded)
    assert seen[-1] is not None


@pytest.mark.parametrize("speech,text", [("wav2vec2", "m2m100"), ("w2v_bert", "nllb"), ("whisper", "mbart")])
def test_saved_config_round_trips_with_both_sub_configs(speech, text, make_model, tmp_path):
    """Each sub-config comes back as its own config class (not a dict, not the default whisper/mbart), equal,
    and still a sub-config to transformers (the attention implementation reaches it)."""
    from transformers import AutoConfig

    from comsl.models.composite import ComSLConfig

    config = make_model(speech, text).config
    config.save_pretrained(tmp_path)
    for loaded in (ComSLConfig.from_pretrained(tmp_path), AutoConfig.from_pretrained(tmp_path)):
        assert type(loaded) is ComSLConfig
        for key in ("speech_config", "text_config"):
            sub, saved = getattr(loaded, key), getattr(config, key)
            assert type(sub) is type(saved) and sub.to_dict() == saved.to_dict(), key
        loaded._attn_implementation = "eager"
        assert loaded.speech_config._attn_implementation == loaded.text_config._attn_implementation == "eager"
    default = ComSLConfig()  # transformers builds one to diff against when saving
    assert (default.speech_config.model_type, default.text_config.model_type) == ("whisper", "mbart")


def test_missing_sub_config_declaration_is_named(monkeypatch):
    import transformers.configuration_utils

    from comsl.models.composite import _auto_sub_config

    monkeypatch.delattr(transformers.configuration_utils, "SubConfigSpec")
    with pytest.raises(ImportError, match="ComSLConfig declares its speech and text sub-configs with .*SubConfigSpec"):
        _auto_sub_config("whisper")

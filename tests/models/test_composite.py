"""The composite on tiny backbones: every pair builds, trains, round-trips; padding invariance; golden forward."""

from __future__ import annotations

import pytest
import torch

from comsl.models import ComSLModel

PAIRS = [(s, t) for s in ("whisper", "wav2vec2", "hubert", "w2v_bert") for t in ("mbart", "m2m100", "nllb")]


def speech_input(kind: str, lengths: list[int], seed: int = 0):
    """Random speech of the front end ``kind`` needs, zero-padded, with its mask."""
    g = torch.Generator().manual_seed(seed)
    width = max(lengths)
    shape = {"whisper": (len(lengths), 80, width), "w2v_bert": (len(lengths), width, 160)}.get(
        kind, (len(lengths), width))
    x = torch.randn(shape, generator=g)
    mask = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).long()
    if kind == "whisper":
        x = x * mask[:, None, :]
    elif kind == "w2v_bert":
        x = x * mask[..., None]
    else:
        x = x * mask
    return x, mask


LENGTHS = {"whisper": [230, 97], "w2v_bert": [70, 33], "wav2vec2": [9000, 4100], "hubert": [9000, 4100]}


def text_batch(tokenizer):
    from comsl.data.batching import pad_ids
    from comsl.data.processor import encode

    tr, tr_mask = pad_ids([encode(tokenizer, "le chat est assis", "fr"),
                           encode(tokenizer, "der Hund", "de")], tokenizer.pad_token_id)
    tg, tg_mask = pad_ids([encode(tokenizer, "the cat sat", "en"),
                           encode(tokenizer, "the dog sleeps in the garden", "en")], tokenizer.pad_token_id)
    src = torch.tensor([tr[0, 0], tr[1, 0]])
    return tr, tr_mask, tg, tg_mask, src


@pytest.mark.parametrize("speech,text", PAIRS)
def test_every_backbone_pair_trains_and_round_trips(speech, text, make_model, tokenizer, tmp_path):
    model = make_model(speech, text)
    x, mask = speech_input(speech, LENGTHS[speech])
    _, _, tg, tg_mask, src = text_batch(tokenizer)
    model.train()
    out = model(speech=x, speech_mask=mask, src_lang_ids=src, target_ids=tg, target_mask=tg_mask)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    grads = [p.grad for n, p in model.named_parameters() if n.startswith("adapter.")]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)

    model.eval()
    model.save_pretrained(tmp_path)
    loaded = ComSLModel.from_pretrained(tmp_path).eval()
    assert loaded.tokenizer is not None and len(loaded.tokenizer) == len(tokenizer)
    with torch.no_grad():
        a = model(speech=x, speech_mask=mask, src_lang_ids=src, target_ids=tg, target_mask=tg_mask).logits
        b = loaded(speech=x, speech_mask=mask, src_lang_ids=src, target_ids=tg, target_mask=tg_mask).logits
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
    x, mask = speech_input("whisper", LENGTHS["whisper"])
    _, _, tg, tg_mask, src = text_batch(tokenizer)
    model(speech=x, speech_mask=mask, src_lang_ids=src, target_ids=tg, target_mask=tg_mask).loss.backward()
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
    x, mask = speech_input("whisper", LENGTHS["whisper"])
    _, _, tg, tg_mask, src = text_batch(tokenizer)
    model(speech=x, speech_mask=mask, src_lang_ids=src, target_ids=tg, target_mask=tg_mask).loss.backward()
    assert all(p.grad is None for p in model.speech_encoder.parameters())
    assert all(p.grad is not None for p in model.adapter.parameters())


def test_golden_fixed_init_forward(make_model, tokenizer):
    """Pins the fixed-seed forward so a silent change in the model fails loudly."""
    model = make_model(seed=0)
    x, mask = speech_input("whisper", [230, 97], seed=1)
    _, _, tg, tg_mask, src = text_batch(tokenizer)
    with torch.no_grad():
        out = model(speech=x, speech_mask=mask, src_lang_ids=src, target_ids=tg, target_mask=tg_mask)
    assert out.logits.shape == (2, tg.shape[1], len(tokenizer))
    assert float(out.loss) == pytest.approx(GOLDEN_LOSS, abs=1e-4)


GOLDEN_LOSS = 4.815921


def test_text_input_mt_path(make_model, tokenizer):
    model = make_model()
    tr, tr_mask, tg, tg_mask, _ = text_batch(tokenizer)
    out = model(input_ids=tr, attention_mask=tr_mask, target_ids=tg, target_mask=tg_mask)
    assert torch.isfinite(out.loss)
    ids = model.generate_text(tr, tr_mask, tokenizer.convert_tokens_to_ids("en_XX"), num_beams=3, max_new_tokens=6)
    assert ids.shape[0] == 2 and ids.shape[1] <= 8
    with pytest.raises(ValueError, match="exactly one"):
        model(target_ids=tg, target_mask=tg_mask)


def test_too_long_speech_is_refused(make_model):
    model = make_model(max_speech_seconds=2.0)
    x, mask = speech_input("whisper", [201])
    with pytest.raises(ValueError, match="more than the maximum 200"):
        model.encode_speech(x, mask)

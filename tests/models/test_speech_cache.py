"""Memoised frozen speech blocks: same outputs, losses and beams as without the cache; one encoder pass
per utterance; never used while gradients flow into the speech blocks."""

from __future__ import annotations

import pytest
import torch

from comsl.config import ExperimentConfig, from_dict
from comsl.errors import ConfigError
from comsl.models.speech_cache import cache_speech_encoder
from tests.helpers import LENGTHS, speech_batch, speech_input, task_loss


def test_cached_encoding_equals_fresh_and_counts_passes(make_model):
    model = make_model("whisper")
    x, mask = speech_input("whisper", LENGTHS["whisper"], seed=1)
    with torch.no_grad():
        fresh = model.encode_speech(x, mask)
        cache = cache_speech_encoder(model)
        first = model.encode_speech(x, mask)
        # the short one alone (a hit), then batched with a new, longer utterance (one miss)
        alone = model.encode_speech(x[1:, :, : LENGTHS["whisper"][1]], mask[1:, : LENGTHS["whisper"][1]])
        y, y_mask = speech_input("whisper", [300, LENGTHS["whisper"][1]], seed=2)
        y[1, :, : LENGTHS["whisper"][1]] = x[1, :, : LENGTHS["whisper"][1]]
        mixed = model.encode_speech(y, y_mask)
    assert (cache.misses, cache.hits) == (3, 2)
    assert torch.equal(first.mask, fresh.mask)
    torch.testing.assert_close(first.hidden, fresh.hidden, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(first.speech_hidden * first.speech_mask[..., None],
                               fresh.speech_hidden * fresh.speech_mask[..., None], atol=1e-5, rtol=1e-5)
    n = int(fresh.mask[1].sum())
    torch.testing.assert_close(alone.hidden[0, :n], fresh.hidden[1, :n], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mixed.hidden[1, :n], fresh.hidden[1, :n], atol=1e-5, rtol=1e-5)
    assert mixed.speech_mask.shape[1] == 150  # ceil(300 / 2), as a fresh forward over the padded batch


def test_frozen_training_loss_and_beam_unchanged(make_model, tokenizer):
    x, mask = speech_input("whisper", LENGTHS["whisper"], seed=4)
    batch, loss = speech_batch(tokenizer, x, mask), task_loss(tokenizer)
    src = batch["src_lang_ids"]
    results = []
    for cached in (False, True):
        model = make_model("whisper").train()
        model.set_speech_frozen(True)
        if cached:
            cache_speech_encoder(model)
        losses = [loss(model, batch) for _ in range(2)]
        losses[-1].backward()
        assert all(p.grad is None for p in model.speech_encoder.parameters())
        assert all(p.grad is not None for p in model.adapter.parameters())
        model.eval()
        en = tokenizer.convert_tokens_to_ids("en_XX")
        beams = model.generate_speech(x, mask, src, en, num_beams=3, max_new_tokens=8)
        results.append(([float(v) for v in losses], beams.tolist()))
    assert results[0][1] == results[1][1]
    assert results[0][0] == pytest.approx(results[1][0], abs=1e-5)


def test_not_used_while_speech_blocks_train(make_model, tokenizer):
    model = make_model("whisper").train()
    cache = cache_speech_encoder(model)
    task_loss(tokenizer)(model, speech_batch(tokenizer, *speech_input("whisper", LENGTHS["whisper"]))).backward()
    assert cache.hits == cache.misses == 0
    assert all(p.grad is not None for p in model.speech_encoder.encoder.layers.parameters())
    assert cache_speech_encoder(model) is cache  # installing twice keeps the one cache


def test_config_requires_speech_frozen_for_the_whole_run():
    base = {"data": {"train_manifest": "x.tsv"}, "train": {"cache_frozen_speech": True}}
    with pytest.raises(ConfigError, match="train.cache_frozen_speech: needs speech blocks frozen"):
        from_dict(ExperimentConfig, base)
    with pytest.raises(ConfigError, match="needs model.speech_dropout=0"):
        from_dict(ExperimentConfig, {**base, "train": {"cache_frozen_speech": True, "speech_trainable": False},
                                     "model": {"speech_dropout": 0.1}})
    cfg = from_dict(ExperimentConfig, {**base, "train": {"cache_frozen_speech": True,
                                                         "freeze_speech_fraction": 1.0}})
    assert cfg.train.cache_frozen_speech


def test_fbank_input_is_cut_along_time(make_model):
    """w2v-BERT input is (B, T, 160): the cache must cut time, not features."""
    model = make_model("w2v_bert")
    x, mask = speech_input("w2v_bert", LENGTHS["w2v_bert"], seed=5)
    with torch.no_grad():
        fresh = model.encode_speech(x, mask)
        cache = cache_speech_encoder(model)
        cached = model.encode_speech(x, mask)
        again = model.encode_speech(x[1:, : LENGTHS["w2v_bert"][1]], mask[1:, : LENGTHS["w2v_bert"][1]])
    assert (cache.misses, cache.hits) == (2, 1)
    torch.testing.assert_close(cached.hidden, fresh.hidden, atol=1e-5, rtol=1e-5)
    n = int(fresh.mask[1].sum())
    torch.testing.assert_close(again.hidden[0, :n], fresh.hidden[1, :n], atol=1e-5, rtol=1e-5)


def test_store_stays_within_its_byte_budget(make_model):
    model = make_model("whisper")
    x, mask = speech_input("whisper", LENGTHS["whisper"], seed=6)
    with torch.no_grad():
        fresh = model.encode_speech(x, mask)
        n_out = [int(m.sum()) for m in fresh.speech_mask]
        per_frame = fresh.speech_hidden.shape[-1] * 4
        budget = max(n_out) * per_frame  # room for the longer utterance's output, not for both
        cache = cache_speech_encoder(model, max_bytes=budget)
        first = model.encode_speech(x, mask)
        assert cache.store.nbytes <= budget and len(cache.store) == 1
        again = model.encode_speech(x, mask)  # the evicted one is encoded again
    assert cache.store.nbytes <= budget and cache.misses == 3 and cache.hits == 1
    for out in (first, again):
        torch.testing.assert_close(out.hidden, fresh.hidden, atol=1e-5, rtol=1e-5)

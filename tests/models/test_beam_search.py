"""comsl's beam search gives exactly the tokens of transformers' ``generate`` (as the composite calls it)."""

from __future__ import annotations

import pytest
import torch

from comsl.models.beam_search import beam_search, unsupported_settings


def encoder_states(batch: int, seed: int, width: int = 32, length: int = 9):
    """Random encoder states (B, S, D) with a different amount of padding per row."""
    g = torch.Generator().manual_seed(seed)
    enc = torch.randn(batch, length, width, generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    for i in range(batch):
        mask[i, length - i % 4:] = 0
    return enc, mask


def make_confident(model, logit_scale: float = 10.0, eos_bias: float = 4.0, cross_scale: float = 1.0) -> None:
    """Sharpen a random mBART's next-token distributions (like a trained model's), make </s> likely and
    (``cross_scale``) let the encoder states matter more, so hypotheses end at different steps."""
    decoder = model.text_model.model.decoder
    norm = decoder.layer_norm
    with torch.no_grad():
        for layer in decoder.layers:
            layer.encoder_attn.out_proj.weight.mul_(cross_scale)
        norm.weight.mul_(logit_scale)
        norm.bias.mul_(logit_scale)
        model.text_model.final_logits_bias[0, model.config.text_config.eos_token_id] = eos_bias


def ours(model, enc, mask, lang, **kw):
    tm, tc = model.text_model, model.config.text_config
    return beam_search(tm, enc, mask, decoder_start_id=tc.eos_token_id, forced_bos_id=lang, eos_id=tc.eos_token_id,
                       pad_id=tc.pad_token_id, forced_eos_id=tm.generation_config.forced_eos_token_id, **kw)


@pytest.mark.parametrize("text", ["mbart", "m2m100"])
@pytest.mark.parametrize("num_beams", [1, 3, 5])
def test_identical_to_transformers_generate(text, num_beams, make_model, tokenizer):
    lang = tokenizer.convert_tokens_to_ids("en_XX")
    eos = tokenizer.eos_token_id
    for seed in range(2):
        model = make_model("whisper", text, seed=seed)
        if text == "mbart":
            make_confident(model, cross_scale=3.0)
        for batch in (1, 4):
            enc, mask = encoder_states(batch, seed)
            enc = enc + 3 * torch.randn(batch, 1, enc.shape[-1], generator=torch.Generator().manual_seed(seed))
            for max_new, lp in ((1, 1.0), (6, 0.6), (18, 1.0)):
                kw = dict(num_beams=num_beams, max_new_tokens=max_new, length_penalty=lp)
                ref = model._generate(enc, mask, lang, use_hf_generate=True, **kw)
                got = ours(model, enc, mask, lang, **kw)
                assert got.shape == ref.shape and torch.equal(got, ref), (seed, batch, kw, ref, got)
                # forced </s> start, then the target language (unless a forced final </s> takes its place)
                last_forced = max_new == 1 and model.text_model.generation_config.forced_eos_token_id == eos
                assert (got[:, :2] == torch.tensor([eos, eos if last_forced else lang])).all()


def test_sentences_end_at_different_steps_and_are_padded(make_model, tokenizer):
    model = make_model("whisper", "mbart", seed=1)
    tc = model.config.text_config
    make_confident(model, eos_bias=4.0, cross_scale=3.0)
    enc, mask = encoder_states(6, seed=0)
    # a different mean per sentence: what the random decoder's cross-attention notices most
    enc, mask = enc + 3 * torch.randn(6, 1, 32, generator=torch.Generator().manual_seed(1)), torch.ones_like(mask)
    lang = tokenizer.convert_tokens_to_ids("en_XX")
    got = ours(model, enc, mask, lang, num_beams=5, max_new_tokens=30)
    ref = model._generate(enc, mask, lang, num_beams=5, max_new_tokens=30, length_penalty=1.0,
                          use_hf_generate=True)
    assert torch.equal(got, ref)
    lengths = (got != tc.pad_token_id).sum(1)
    assert len(set(lengths.tolist())) > 1  # sentences finished (and left the batch) at different steps
    for row, n in zip(got, lengths):
        assert row[n - 1] == tc.eos_token_id and (row[n:] == tc.pad_token_id).all()


def test_composite_generate_uses_it_by_default(make_model, tokenizer):
    from comsl.data.batching import pad_ids
    from comsl.data.processor import encode

    model = make_model("whisper", "mbart")
    x = torch.randn(2, 80, 230, generator=torch.Generator().manual_seed(0))
    mask = (torch.arange(230)[None, :] < torch.tensor([[230], [97]])).long()
    x = x * mask[:, None, :]
    tr, tr_mask = pad_ids([encode(tokenizer, "le chat est assis", "fr"), encode(tokenizer, "der Hund", "de")],
                          tokenizer.pad_token_id)
    src = tr[:, 0]
    en = tokenizer.convert_tokens_to_ids("en_XX")
    for kw in (dict(num_beams=5, max_new_tokens=10), dict(num_beams=2, max_new_tokens=4, length_penalty=2.0)):
        assert torch.equal(model.generate_speech(x, mask, src, en, **kw),
                           model.generate_speech(x, mask, src, en, use_hf_generate=True, **kw))
        assert torch.equal(model.generate_text(tr, tr_mask, en, **kw),
                           model.generate_text(tr, tr_mask, en, use_hf_generate=True, **kw))


def test_settings_it_does_not_reproduce_fall_back_to_generate(make_model, tokenizer):
    model = make_model("whisper", "mbart")
    assert unsupported_settings(model.text_model.generation_config) == []
    model.text_model.generation_config.no_repeat_ngram_size = 2
    assert unsupported_settings(model.text_model.generation_config) == ["no_repeat_ngram_size"]
    enc, mask = encoder_states(2, seed=0)
    en = tokenizer.convert_tokens_to_ids("en_XX")
    got = model._generate(enc, mask, en, num_beams=3, max_new_tokens=12, length_penalty=1.0)
    ref = model._generate(enc, mask, en, num_beams=3, max_new_tokens=12, length_penalty=1.0, use_hf_generate=True)
    assert torch.equal(got, ref)
    for row in got.tolist():  # the n-gram rule really applied (padding after </s> aside)
        tokens = row[: row.index(tokenizer.pad_token_id)] if tokenizer.pad_token_id in row else row
        bigrams = list(zip(tokens, tokens[1:]))
        assert len(tokens) > 3 and len(bigrams) == len(set(bigrams))


def test_bad_arguments_are_refused(make_model):
    model = make_model()
    enc, mask = encoder_states(1, seed=0)
    with pytest.raises(ValueError, match="num_beams >= 1"):
        ours(model, enc, mask, 5, num_beams=0)

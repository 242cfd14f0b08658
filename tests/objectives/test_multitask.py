"""The combined ComSL loss on a tiny model: skipped passes, gradient flow per configuration, named parts."""

from __future__ import annotations

import pytest
import torch

from comsl.config import ObjectiveConfig
from comsl.errors import ConfigError
from comsl.objectives import ComSLMultiTaskLoss

PARTS = ("asr", "st", "mt", "mtp", "stm_src", "stm_tgt", "erm", "cml")


@pytest.fixture
def batch(tokenizer):
    from comsl.data.batching import pad_ids
    from comsl.data.processor import encode

    torch.manual_seed(0)
    lengths = torch.tensor([180, 95])
    mask = (torch.arange(180)[None] < lengths[:, None]).long()
    tr, tr_mask = pad_ids([encode(tokenizer, "le chat est assis sur le tapis", "fr"),
                           encode(tokenizer, "der Hund schläft", "de")], tokenizer.pad_token_id)
    tg, tg_mask = pad_ids([encode(tokenizer, "the cat sat on the mat", "en"),
                           encode(tokenizer, "the dog sleeps", "en")], tokenizer.pad_token_id)
    return dict(speech=torch.randn(2, 80, 180) * mask[:, None], speech_mask=mask, src_lang_ids=tr[:, 0].clone(),
                transcript_ids=tr, transcript_mask=tr_mask, translation_ids=tg, translation_mask=tg_mask)


def make_loss(tokenizer, teacher=None, **weights):
    return ComSLMultiTaskLoss(ObjectiveConfig(**weights), mask_token_id=tokenizer.mask_token_id,
                              eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                              teacher=teacher)


def count_calls(monkeypatch, obj, names):
    counts = dict.fromkeys(names, 0)
    for name in names:
        original = getattr(obj, name)

        def wrapped(*a, _n=name, _f=original, **k):
            counts[_n] += 1
            return _f(*a, **k)

        monkeypatch.setattr(obj, name, wrapped)
    return counts


def test_full_comsl_logs_every_part_and_runs_each_pass_once(make_model, tokenizer, batch, monkeypatch):
    model, teacher = make_model(seed=0).train(), make_model(seed=1)
    calls = count_calls(monkeypatch, model, ["encode_speech", "encode_embeds", "decode_hidden"])
    t_calls = count_calls(monkeypatch, teacher, ["decode_hidden"])
    total, parts = make_loss(tokenizer, teacher)(model, batch)
    assert set(parts) == set(PARTS)
    assert all(torch.isfinite(v) for v in parts.values())
    # speech encoder once; text encoder over speech, over the transcript (MT), over the concatenation
    assert calls == {"encode_speech": 1, "encode_embeds": 3, "decode_hidden": 2}  # two batched decoder calls
    assert t_calls == {"decode_hidden": 1}
    expected = (0.35 * parts["asr"] + 0.35 * parts["st"] + 0.2 * parts["mt"]
                + 0.1 * ((parts["stm_src"] + parts["stm_tgt"] + parts["mtp"]) / 3 + 0.1 * parts["erm"]))
    assert float(total) == pytest.approx(float(expected), rel=1e-6)


@pytest.mark.parametrize("zero,absent,calls", [
    ("w_cml", {"mtp", "stm_src", "stm_tgt", "erm", "cml"}, {"encode_speech": 1, "encode_embeds": 2}),
    ("w_asr", {"asr"}, {"encode_speech": 1, "encode_embeds": 3}),
    ("w_mt", {"mt"}, {"encode_speech": 1, "encode_embeds": 3}),
    ("w_erm", {"erm"}, {"encode_speech": 1, "encode_embeds": 3}),
])
def test_zero_weight_skips_its_computation(make_model, tokenizer, batch, monkeypatch, zero, absent, calls):
    model, teacher = make_model().train(), make_model(seed=1)
    counts = count_calls(monkeypatch, model, ["encode_speech", "encode_embeds"])
    t_counts = count_calls(monkeypatch, teacher, ["encode_text"])
    _, parts = make_loss(tokenizer, teacher, **{zero: 0.0})(model, batch)
    assert absent.isdisjoint(parts) and set(PARTS) - absent <= set(parts)
    assert counts == calls
    assert t_counts["encode_text"] == (0 if zero == "w_mt" else 1)


def test_st_only_skips_everything_else(make_model, tokenizer, batch, monkeypatch):
    model = make_model().train()
    counts = count_calls(monkeypatch, model, ["encode_speech", "encode_embeds", "encode_text", "decode_hidden"])
    loss = make_loss(tokenizer, None, w_asr=0, w_mt=0, w_cml=0, lambda_st=0)
    total, parts = loss(model, batch)
    assert set(parts) == {"st"} and float(total) == pytest.approx(0.35 * float(parts["st"]))
    assert counts == {"encode_speech": 1, "encode_embeds": 1, "encode_text": 0, "decode_hidden": 1}


def test_ddm_without_mt_loss_runs_mt_pass_without_gradient(make_model, tokenizer, batch):
    model = make_model().train()
    total, parts = make_loss(tokenizer, None, w_asr=0, w_mt=0, w_cml=0, lambda_st=0.8)(model, batch)
    assert set(parts) == {"st"}
    total.backward()  # the MT pass carried no graph; ST still trains the whole model
    assert model.adapter.conv1.conv.weight.grad is not None


def _grad_names(model):
    return {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def _trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_gradients_full_comsl_reach_all_trainable_parameters_not_teacher(make_model, tokenizer, batch):
    model, teacher = make_model().train(), make_model(seed=1)
    total, _ = make_loss(tokenizer, teacher)(model, batch)
    total.backward()
    assert _grad_names(model) == _trainable(model)
    assert all(p.grad is None for p in teacher.parameters())
    assert not any(p.requires_grad for p in teacher.parameters())


def test_sparse_tied_embedding_lookups_give_the_dense_gradients(make_model, tokenizer, batch, monkeypatch):
    """The full ComSL loss's gradients are those of dense embedding lookups, and the tied weight's is dense."""
    import contextlib

    from comsl.models import ComSLModel

    grads = []
    for sparse in (True, False):
        if not sparse:
            monkeypatch.setattr(ComSLModel, "sparse_embedding_grads",
                                lambda self, enabled=True: contextlib.nullcontext())
        model, teacher = make_model().train(), make_model(seed=1)
        torch.manual_seed(0)
        lookups = []
        emb = model.text_model.get_input_embeddings()
        emb.register_forward_pre_hook(lambda m, args: lookups.append(m.sparse))
        total, _ = make_loss(tokenizer, teacher)(model, batch)
        total.backward()
        assert lookups and all(s == sparse for s in lookups) and not emb.sparse
        assert not emb.weight.grad.is_sparse
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-5, atol=1e-6, msg=name)


def test_gradients_st_only(make_model, tokenizer, batch):
    model = make_model().train()
    total, _ = make_loss(tokenizer, None, w_asr=0, w_mt=0, w_cml=0, lambda_st=0)(model, batch)
    total.backward()
    assert _grad_names(model) == _trainable(model)


def test_gradients_adapter_only(make_model, tokenizer, batch):
    """SLM-style: both pretrained backbones frozen; only the adapter learns."""
    model, teacher = make_model().train(), make_model(seed=1)
    for part in ("speech_encoder", "text_encoder", "text_decoder"):
        model.set_trainable(part, False)
    total, _ = make_loss(tokenizer, teacher)(model, batch)
    total.backward()
    adapter = {n for n, _ in model.named_parameters() if n.startswith("adapter.")}
    assert _trainable(model) == adapter
    assert _grad_names(model) == adapter


def test_speech_frozen_period(make_model, tokenizer, batch):
    model = make_model().train()
    model.set_speech_frozen(True)
    total, _ = make_loss(tokenizer, None, lambda_mt=0)(model, batch)
    total.backward()
    assert not any(n.startswith("speech_encoder.") for n in _grad_names(model))
    assert any(n.startswith("adapter.") for n in _grad_names(model))


def test_text_only_batch_trains_text_blocks_only(make_model, tokenizer, batch):
    model = make_model().train()
    text = {k: v for k, v in batch.items() if not k.startswith("speech")}
    total, parts = make_loss(tokenizer, None, lambda_mt=0)(model, text)
    assert set(parts) == {"mt"}
    total.backward()
    assert {model.part_of(n) for n in _grad_names(model)} == {"text_encoder", "text_decoder"}


def test_ctc_and_matching_switches(make_model, tokenizer, batch):
    model = make_model(ctc_head=True, match_head=True).train()
    total, parts = make_loss(tokenizer, None, lambda_mt=0, w_ctc=0.3, w_match=0.2)(model, batch)
    assert {"ctc", "match"} <= set(parts) and torch.isfinite(total)
    total.backward()
    assert model.ctc_head.weight.grad is not None and model.match_head.weight.grad is not None
    with pytest.raises(ConfigError, match="no CTC head"):
        make_loss(tokenizer, None, lambda_mt=0, w_ctc=0.3)(make_model(), batch)


def test_missing_teacher_is_a_config_error(tokenizer):
    with pytest.raises(ConfigError, match="teacher"):
        make_loss(tokenizer, None)


def test_a_few_steps_of_all_parts_lower_the_loss(make_model, tokenizer, batch):
    model, teacher = make_model().train(), make_model(seed=1)
    loss = make_loss(tokenizer, teacher)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    history = []
    for _ in range(8):
        torch.manual_seed(0)
        total, parts = loss(model, batch)
        opt.zero_grad()
        total.backward()
        opt.step()
        assert all(torch.isfinite(v) for v in parts.values())
        history.append(float(total))
    assert history[-1] < 0.9 * history[0]


def test_erm_variant_is_chosen_by_config(make_model, tokenizer, batch):
    from comsl.objectives.cml import erm_mse, erm_reference
    from comsl.objectives.multitask import plan_for

    model = make_model()  # eval mode: the passes are deterministic given the masking draw
    parts = {}
    for variant in ("mse", "reference"):
        torch.manual_seed(0)
        parts[variant] = make_loss(tokenizer, None, lambda_mt=0, erm_variant=variant)(model, batch)[1]
    torch.manual_seed(0)
    enc = model(batch, plan_for(ObjectiveConfig(lambda_mt=0), has_speech=True, mask_token_id=tokenizer.mask_token_id))
    assert float(parts["mse"]["erm"]) == pytest.approx(float(erm_mse(*enc.erm)), rel=1e-6)
    assert float(parts["reference"]["erm"]) == pytest.approx(float(erm_reference(*enc.erm)), rel=1e-6)
    assert float(parts["mse"]["erm"]) != pytest.approx(float(parts["reference"]["erm"]))
    assert all(float(parts["mse"][k]) == float(parts["reference"][k]) for k in ("st", "asr", "mtp", "stm_src"))


def test_ddm_target_and_teacher_run_without_autograd_state(make_model, tokenizer, batch):
    from comsl.models.encodings import Plan

    model, teacher = make_model().train(), make_model(seed=1)
    enc = model(batch, Plan(st=True, mt_target=True))
    assert enc.states["st"].grad_fn is not None and enc.states["mt_target"].grad_fn is None
    seen = []
    teacher.register_forward_pre_hook(lambda m, args: seen.append(torch.is_grad_enabled()))
    make_loss(tokenizer, teacher)(model, batch)
    assert seen == [False]


def _text_batch(tokenizer, pairs):
    from comsl.data.batching import pad_ids
    from comsl.data.processor import encode

    tr, tr_mask = pad_ids([encode(tokenizer, src, lang) for src, lang, _ in pairs], tokenizer.pad_token_id)
    tg, tg_mask = pad_ids([encode(tokenizer, tgt, "en") for _, _, tgt in pairs], tokenizer.pad_token_id)
    return dict(transcript_ids=tr, transcript_mask=tr_mask, translation_ids=tg, translation_mask=tg_mask)


EXTRA = [("le chien dort sur le tapis du chat assis", "fr", "the dog sleeps on the mat of the sitting cat"),
         ("der Hund", "de", "the dog"), ("le chat", "fr", "the cat sat on the mat and the dog sleeps")]


def _scored(batch):
    return int(batch["translation_mask"].sum()) - batch["translation_mask"].shape[0]  # the lang token is not scored


def test_extra_mt_text_joins_the_mt_pass_and_the_teacher_but_not_ddm(make_model, tokenizer, batch, monkeypatch):
    """L_MT over the batch's 2 pairs + 3 extra rows is the token-weighted mean of L_MT over each alone (teacher
    term included); one MT encoder call of 5 rows; ST's DDM target reads the batch's own rows only."""
    model, teacher = make_model(seed=0), make_model(seed=1)  # eval mode: deterministic passes
    loss = make_loss(tokenizer, teacher)
    extra = _text_batch(tokenizer, EXTRA)
    assert extra["translation_ids"].shape[1] > batch["translation_ids"].shape[1]  # padding to the longest is exercised
    rows = []
    monkeypatch.setattr(model, "encode_text", lambda ids, mask, _f=model.encode_text: rows.append(ids.shape[0])
                        or _f(ids, mask))
    torch.manual_seed(0)
    _, with_extra = loss(model, {**batch, "mt_extra": extra})
    assert rows == [5]
    torch.manual_seed(0)
    _, plain = loss(model, batch)
    text_only = {k: v for k, v in batch.items() if not k.startswith("speech")}
    mt_alone = make_loss(tokenizer, teacher, w_asr=0, w_st=0, w_cml=0)
    own, other = mt_alone(model, text_only)[1]["mt"].item(), mt_alone(model, extra)[1]["mt"].item()
    n_own, n_other = _scored(batch), _scored(extra)
    assert float(plain["mt"]) == pytest.approx(own, rel=1e-5)
    assert float(with_extra["mt"]) == pytest.approx((n_own * own + n_other * other) / (n_own + n_other), rel=1e-5)
    assert abs(float(with_extra["mt"]) - own) > 1e-3
    for name in ("st", "asr", "mtp", "stm_src", "stm_tgt", "erm"):
        assert float(with_extra[name]) == pytest.approx(float(plain[name]), rel=1e-5), name


def test_extra_mt_text_is_skipped_when_only_ddm_needs_the_mt_pass(make_model, tokenizer, batch, monkeypatch):
    model = make_model()
    rows = []
    monkeypatch.setattr(model, "encode_text", lambda ids, mask, _f=model.encode_text: rows.append(ids.shape[0])
                        or _f(ids, mask))
    loss = make_loss(tokenizer, None, w_asr=0, w_mt=0, w_cml=0, lambda_st=0.8)
    _, parts = loss(model, {**batch, "mt_extra": _text_batch(tokenizer, EXTRA)})
    assert rows == [2] and set(parts) == {"st"}
    assert float(parts["st"]) == pytest.approx(float(loss(model, batch)[1]["st"]), rel=1e-6)

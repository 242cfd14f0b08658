"""The composite's attention function: the explicit form for short 16-bit CPU training, SDPA otherwise."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from comsl.models import attention
from tests.helpers import LENGTHS, speech_batch, speech_input, task_loss


class _Module(torch.nn.Module):
    def __init__(self, is_causal):
        super().__init__()
        self.is_causal = is_causal


def _inputs(b, h, tq, tk, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, h, t, 16, generator=g).to(dtype).requires_grad_() for t in (tq, tk, tk)]


def _masks(b, tq, tk):
    keep = torch.arange(tk)[None, :] < torch.tensor([tk, tk - 3])[:b, None]
    bool_mask = keep[:, None, None, :].expand(b, 1, tq, tk)
    additive = torch.zeros(b, 1, 1, tk).masked_fill(~keep[:, None, None, :], torch.finfo(torch.float32).min)
    return {"none": None, "bool": bool_mask, "additive": additive}


@pytest.mark.parametrize("mask_kind,is_causal,tq,tk", [("none", True, 9, 9), ("bool", False, 9, 9),
                                                       ("additive", False, 9, 9), ("bool", False, 5, 11)])
def test_explicit_form_equals_sdpa_in_value_and_gradient(monkeypatch, mask_kind, is_causal, tq, tk):
    """Forced onto float32 inputs, the explicit form is SDPA's arithmetic (1e-5), for causal self-attention,
    boolean and additive padding masks and cross-attention."""
    q, k, v = _inputs(2, 2, tq, tk, torch.float32)
    mask = _masks(2, tq, tk)[mask_kind]
    module = _Module(is_causal)
    grad = torch.randn(2, tq, 2, 16, generator=torch.Generator().manual_seed(3))
    monkeypatch.setattr(attention, "_explicit", lambda *a: True)
    got, _ = attention.comsl_attention_forward(module, q, k, v, mask, scaling=0.25)
    got_grads = torch.autograd.grad(got, (q, k, v), grad)
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal and mask is None,
                                          scale=0.25).transpose(1, 2)
    want_grads = torch.autograd.grad(want, (q, k, v), grad)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for a, b in zip(got_grads, want_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype,grad,tq,dropout,explicit", [
    (torch.bfloat16, True, 20, 0.0, True),      # a decoder's short training attention
    (torch.bfloat16, True, 200, 0.0, False),    # long: the flash kernel is faster
    (torch.bfloat16, False, 20, 0.0, False),    # inference: the flash forward is fast
    (torch.float32, True, 20, 0.0, False),      # float32: SDPA is as fast
    (torch.bfloat16, True, 20, 0.1, False),     # dropout inside attention: SDPA's
])
def test_which_path_runs(monkeypatch, dtype, grad, tq, dropout, explicit):
    calls = []
    monkeypatch.setattr(attention, "sdpa_attention_forward", lambda *a, **k: calls.append(1) or (a[1], None))
    q, k, v = _inputs(2, 2, tq, tq, dtype)
    with torch.set_grad_enabled(grad):
        out, _ = attention.comsl_attention_forward(_Module(False), q, k, v, None, dropout=dropout)
    assert (not calls) == explicit
    if explicit:
        assert out.shape == (2, tq, 2, 16) and out.dtype == dtype


def test_composite_selects_it_and_bf16_training_loss_matches_sdpa(make_model, tokenizer, monkeypatch):
    """Every attention layer calls the comsl function; a bf16 training loss and its gradients equal those of
    the same model on transformers' SDPA to bf16 precision."""
    model = make_model("whisper", "mbart").train()
    assert model.config.text_config._attn_implementation == attention.NAME
    assert model.config.speech_config._attn_implementation == attention.NAME
    batch = speech_batch(tokenizer, *speech_input("whisper", LENGTHS["whisper"]))
    batch = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in batch.items()}
    model.to(torch.bfloat16)
    loss_fn = task_loss(tokenizer)
    explicit = []
    monkeypatch.setattr(attention, "_explicit",
                        lambda *a, _f=attention._explicit: explicit.append(_f(*a)) or explicit[-1])
    results = {}
    for name in (attention.NAME, "sdpa"):
        model.config._attn_implementation = name
        torch.manual_seed(0)
        model.zero_grad()
        loss = loss_fn(model, batch)
        loss.backward()
        results[name] = (float(loss.detach()), torch.cat([p.grad.float().flatten() for p in model.parameters()
                                                 if p.grad is not None]))
    assert any(explicit)  # the comsl run took the explicit form (the sdpa run never calls it)
    (a, ga), (b, gb) = results[attention.NAME], results["sdpa"]
    assert a == pytest.approx(b, rel=2e-2)
    assert (ga - gb).norm() / gb.norm() < 0.1

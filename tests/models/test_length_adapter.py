"""The length adapter on its own: lengths, padding invariance, the residual FFN formula, pass-through init."""

from __future__ import annotations

import pytest
import torch

from comsl.models.length_adapter import LengthAdapter, ResidualFFN


def lone(adapter, x):
    return adapter(x, torch.ones(x.shape[:2], dtype=torch.long))


@pytest.mark.parametrize("length", [1, 2, 3, 4, 5, 8, 9, 17])
def test_output_length_is_what_the_convolutions_give(length):
    adapter = LengthAdapter(6, 4, dropout=0.0).eval()
    out, mask = lone(adapter, torch.randn(1, length, 6))
    ceil_half = -(-length // 2)
    assert out.shape == (1, -(-ceil_half // 2), 4)  # two stride-2 convolutions, each ceil(T / 2)
    assert int(mask.sum()) == out.shape[1] == int(LengthAdapter.output_lengths(torch.tensor(length)))


def test_an_utterance_gives_the_same_output_alone_or_batched():
    torch.manual_seed(0)
    adapter = LengthAdapter(6, 4, dropout=0.0).eval()
    long_, short = torch.randn(1, 23, 6), torch.randn(1, 9, 6)
    batch = torch.cat([long_, torch.nn.functional.pad(short, (0, 0, 0, 14), value=7.0)])  # junk in the padding
    mask = torch.tensor([[1] * 23, [1] * 9 + [0] * 14])
    with torch.no_grad():
        out, out_mask = adapter(batch, mask)
        alone, _ = lone(adapter, short)
    n = alone.shape[1]
    assert out_mask[1].tolist() == [1] * n + [0] * (out.shape[1] - n)
    torch.testing.assert_close(out[1, :n], alone[0], rtol=1e-6, atol=1e-6)
    assert (out[1, n:] == 0).all()


def test_residual_ffn_is_layernorm_of_x_plus_half_the_ffn():
    torch.manual_seed(1)
    ffn = ResidualFFN(4, mult=2, dropout=0.0).eval()
    x = torch.randn(3, 4)
    lin1, lin2 = ffn.ffn[0], ffn.ffn[3]
    inner = torch.relu(x @ lin1.weight.T + lin1.bias) @ lin2.weight.T + lin2.bias
    want = torch.nn.functional.layer_norm(x + 0.5 * inner, (4,), ffn.norm.weight, ffn.norm.bias)
    torch.testing.assert_close(ffn(x), want)


def test_pass_through_init_keeps_every_fourth_state_normalised():
    adapter = LengthAdapter(8, 8, dropout=0.0).eval()
    adapter.init_as_subsampling_(gate_bias=8.0)
    x = torch.randn(2, 12, 8)
    with torch.no_grad():
        out, _ = lone(adapter, x)
    gate = torch.sigmoid(torch.tensor(8.0))
    # each GLU passes its centre tap times sigmoid(gate bias); the LayerNorms see the (zeroed) FFN residual
    want = torch.nn.functional.layer_norm(torch.nn.functional.layer_norm(x, (8,))[:, ::2] * gate, (8,))[:, ::2] * gate
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="equal widths, got 8 -> 4"):
        LengthAdapter(8, 4).init_as_subsampling_()


def test_wrong_input_width_is_refused():
    with pytest.raises(ValueError, match="expects width 6, got 5"):
        lone(LengthAdapter(6, 4), torch.randn(1, 4, 5))

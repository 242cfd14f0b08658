"""Each objective's formula against an independent direct computation on small tensors."""

from __future__ import annotations

import math

import pytest
import torch

from comsl.models.cml_inputs import mask_transcript, pack_pair, unpack_pair
from comsl.models.text_models import LinearHead
from comsl.objectives import cross_entropy
from comsl.objectives.cml import combine_cml, erm_mse, erm_reference
from comsl.objectives.cross_entropy import head_cross_entropy
from comsl.objectives.ctc import ctc_loss
from comsl.objectives.matching import matching_loss


def identity(x):
    """An LM head whose logits are its input: the formulas below take logits directly."""
    return x


def mixed_cross_entropy(logits, labels, soft_logits=None, lam=0.0, label_smoothing=0.0):
    return head_cross_entropy(logits, labels, identity, soft_hidden=soft_logits, lam=lam,
                              label_smoothing=label_smoothing)


def _direct(logits, labels, soft, lam):
    """Σ over scored tokens of Σ_v [(1-λ)1(y=v) + λ q(v)] (-log p(v)), divided by their count."""
    total, n = 0.0, 0
    for b in range(logits.shape[0]):
        for t in range(logits.shape[1]):
            y = int(labels[b, t])
            if y == -100:
                continue
            logp = torch.log_softmax(logits[b, t].double(), -1)
            q = torch.softmax(soft[b, t].double(), -1)
            total += sum(((1 - lam) * (v == y) + lam * q[v]) * -logp[v] for v in range(logits.shape[2]))
            n += 1
    return float(total / n)


@pytest.fixture
def tensors():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 7, generator=g, requires_grad=True)
    teacher = torch.randn(2, 4, 7, generator=g, requires_grad=True)
    labels = torch.tensor([[-100, 3, 5, 1], [-100, 2, -100, -100]])
    return logits, teacher, labels


@pytest.mark.parametrize("lam", [0.0, 0.2, 0.8, 1.0])
def test_mixed_ce_matches_direct_sum(tensors, lam):
    logits, teacher, labels = tensors
    got = mixed_cross_entropy(logits, labels, teacher, lam)
    assert float(got.detach()) == pytest.approx(_direct(logits, labels, teacher, lam), rel=1e-5)


def test_ddm_endpoints(tensors):
    logits, teacher, labels = tensors
    valid = labels != -100
    plain = torch.nn.functional.cross_entropy(logits[valid], labels[valid])
    assert float(mixed_cross_entropy(logits, labels, teacher, 0.0)) == pytest.approx(float(plain), rel=1e-6)
    q = torch.softmax(teacher[valid], -1)
    soft_only = -(q * torch.log_softmax(logits[valid], -1)).sum(-1).mean()
    assert float(mixed_cross_entropy(logits, labels, teacher, 1.0)) == pytest.approx(float(soft_only), rel=1e-6)


def test_no_gradient_reaches_the_teacher(tensors):
    logits, teacher, labels = tensors
    mixed_cross_entropy(logits, labels, teacher, 0.8).backward()
    assert teacher.grad is None
    assert logits.grad is not None and logits.grad[labels != -100].abs().sum() > 0
    # unscored positions get no gradient
    assert logits.grad[labels == -100].abs().sum() == 0


def test_mask_never_covers_pad_eos_or_language():
    torch.manual_seed(0)
    ids = torch.tensor([[250004, 10, 11, 12, 13, 2, 1, 1], [250005, 20, 21, 22, 23, 24, 25, 2]])
    mask = (ids != 1).long()
    seen = torch.zeros_like(ids, dtype=torch.bool)
    for _ in range(200):
        masked_ids, masked = mask_transcript(ids, mask, 0.5, mask_token_id=99, eos_token_id=2)
        assert not masked[:, 0].any()
        assert not masked[ids == 2].any() and not masked[mask == 0].any()
        assert torch.equal(masked_ids[masked], torch.full_like(masked_ids[masked], 99))
        assert torch.equal(masked_ids[~masked], ids[~masked])
        seen |= masked
    # every ordinary token is masked sometimes
    assert seen[0, 1:5].all() and seen[1, 1:7].all()
    # on long sentences (where one forced mask hardly matters) the rate is mask_prob
    long_ids = torch.cat([torch.tensor([[250004]]), torch.arange(10, 90)[None], torch.tensor([[2]])], 1)
    rate = torch.stack([mask_transcript(long_ids, torch.ones_like(long_ids), 0.15, 99, 2)[1][:, 1:-1].float().mean()
                        for _ in range(200)])
    assert float(rate.mean()) == pytest.approx(0.15, abs=0.01)


def test_mtp_scores_only_masked_positions():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 5, 9, generator=g)
    ids = torch.tensor([[7, 3, 4, 5, 2]])
    masked = torch.tensor([[False, False, True, False, False]])
    expected = -torch.log_softmax(logits[0, 2], -1)[4]
    labels = ids.masked_fill(~masked, -100)  # as the training forward builds MTP labels
    assert float(mixed_cross_entropy(logits, labels)) == pytest.approx(float(expected), rel=1e-6)
    changed = logits.clone()
    changed[0, [0, 1, 3, 4]] += 5 * torch.randn(4, 9, generator=g)
    assert float(mixed_cross_entropy(changed, labels)) == pytest.approx(float(expected), rel=1e-6)


def test_a_sentence_drawing_no_mask_gets_one():
    ids = torch.tensor([[250004, 10, 11, 12, 2, 1], [250005, 20, 2, 1, 1, 1], [250005, 2, 1, 1, 1, 1]])
    mask = (ids != 1).long()
    for seed in range(20):
        torch.manual_seed(seed)
        masked_ids, masked = mask_transcript(ids, mask, 0.0, mask_token_id=99, eos_token_id=2)
        # p = 0 draws nothing: each sentence with a maskable token gets exactly one; [lang, </s>] none
        assert masked.sum(1).tolist() == [1, 1, 0]
        assert masked[1, 1] and masked[0, 1:4].any() and masked_ids[masked].eq(99).all()
    torch.manual_seed(0)
    _, often = mask_transcript(ids, mask, 0.9, mask_token_id=99, eos_token_id=2)
    assert often[0].sum() >= 2 or often[0, 1:4].all()  # the rule adds nothing to rows that drew a mask


def test_erm_zero_for_identical_and_mse_otherwise():
    x = torch.randn(2, 3, 4)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    assert float(erm_mse(x, x.clone(), mask)) == 0.0
    y = x + 2.0
    y[1, 2] += 100  # a padded position does not count
    assert float(erm_mse(x, y, mask)) == pytest.approx(4.0)


def test_erm_reference_variant_hand_derived():
    """Sum over real positions of |a/|a| - b/|b||, averaged over the batch: orthogonal unit states are
    sqrt(2) apart, opposite ones 2, parallel ones (any length) 0."""
    a = torch.tensor([[[1.0, 0.0], [0.0, 3.0], [5.0, 5.0]], [[2.0, 0.0], [1.0, 1.0], [7.0, 0.0]]])
    b = torch.tensor([[[0.0, 2.0], [0.0, -1.0], [1.0, 1.0]], [[4.0, 0.0], [1.0, 1.0], [0.0, 9.0]]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])  # the last pair of row 2 is padding
    assert float(erm_reference(a, b, mask)) == pytest.approx((math.sqrt(2) + 2 + 0 + 0 + 0) / 2, rel=1e-6)
    assert float(erm_mse(a[:1, :1], b[:1, :1], mask[:1, :1])) == pytest.approx((1 + 4) / 2)


def test_cml_combination():
    v = combine_cml(torch.tensor(3.0), torch.tensor(6.0), torch.tensor(9.0), torch.tensor(2.0), 0.1)
    assert float(v) == pytest.approx(6.2)


def test_pack_and_unpack_pair_are_inverse():
    a = torch.arange(2 * 3 * 1, dtype=torch.float).view(2, 3, 1) + 1
    a_mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    b = -torch.arange(2 * 2 * 1, dtype=torch.float).view(2, 2, 1) - 1
    b_mask = torch.tensor([[1, 0], [1, 1]])
    packed, mask = pack_pair(a * a_mask[..., None], a_mask, b * b_mask[..., None], b_mask)
    assert packed[..., 0].tolist() == [[1, 2, 3, -1], [4, -3, -4, 0]]
    assert mask.tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    za, zb = unpack_pair(packed, a_mask, b_mask)
    assert torch.equal(za, a * a_mask[..., None]) and torch.equal(zb, b * b_mask[..., None])


def test_ctc_hand_checkable():
    # one frame per target token, near-certain logits: loss ~ 0; uniform logits: T*log(V) - log(#paths)
    ids = torch.tensor([[9, 3, 4, 2]])  # [lang, 3, 4, </s>]
    tmask = torch.ones_like(ids)
    def ctc(logits, frames, ids, tmask):
        return ctc_loss(logits, frames, ids, tmask, blank_id=0, eos_token_id=2)

    sure = torch.full((1, 2, 5), -30.0)
    sure[0, 0, 3] = sure[0, 1, 4] = 30.0
    assert float(ctc(sure, torch.ones(1, 2, dtype=torch.long), ids, tmask)) < 1e-6
    uniform = torch.zeros(1, 2, 5)
    # exactly one alignment of 2 frames to "3 4"; reduction='mean' divides by the target length 2
    assert float(ctc(uniform, torch.ones(1, 2, dtype=torch.long), ids, tmask)) == pytest.approx(2 * math.log(5) / 2)


def test_matching_hand_checkable():
    # scores of the paired rows first, then the mismatched ones
    assert float(matching_loss(torch.tensor([0.0, 0.0]))) == pytest.approx(math.log(2))
    assert float(matching_loss(torch.tensor([20.0, 20.0, -20.0, -20.0]))) < 1e-6
    assert float(matching_loss(torch.tensor([-20.0, 20.0]))) == pytest.approx(20.0, rel=1e-6)


def _unfused(hidden, weight, bias, labels, soft_hidden, soft_weight, lam, ls):
    """The whole (N, V) logits at once, as before chunking: the reference of the chunked loss."""
    valid = labels != -100
    logp = torch.log_softmax((hidden[valid] @ weight.T + bias).float(), -1)
    hard = torch.nn.functional.nll_loss(logp, labels[valid], reduction="none")
    hard = (1 - ls) * hard - ls * logp.mean(-1)
    q = torch.softmax((soft_hidden[valid] @ soft_weight.T).float(), -1).detach()
    return ((1 - lam) * hard - lam * (q * logp).sum(-1)).mean()


@pytest.mark.parametrize("lam,ls", [(0.0, 0.0), (0.8, 0.0), (0.2, 0.1)])
def test_chunked_head_cross_entropy_equals_unfused_in_value_and_gradient(monkeypatch, lam, ls):
    g = torch.Generator().manual_seed(0)
    n, d, v = 23, 8, 50
    hidden = torch.randn(n, d, generator=g, requires_grad=True)
    weight = torch.randn(v, d, generator=g, requires_grad=True)
    bias = torch.randn(v, generator=g)
    soft_hidden, soft_weight = torch.randn(n, d, generator=g), torch.randn(v, d, generator=g)
    labels = torch.randint(0, v, (n,), generator=g)
    labels[::4] = -100
    monkeypatch.setattr(cross_entropy, "LOGITS_PER_CHUNK", 3 * v)  # 3 tokens per chunk: 6 chunks
    chunks = []
    monkeypatch.setattr(cross_entropy, "_chunk_loss",
                        lambda h, *a, _f=cross_entropy._chunk_loss: chunks.append(h.shape[0]) or _f(h, *a))
    got = head_cross_entropy(hidden, labels, lambda h: h @ weight.T + bias, soft_hidden=soft_hidden,
                             soft_head=lambda h: h @ soft_weight.T, lam=lam, label_smoothing=ls)
    got_grads = torch.autograd.grad(got, (hidden, weight))
    want = _unfused(hidden, weight, bias, labels, soft_hidden, soft_weight, lam, ls)
    want_grads = torch.autograd.grad(want, (hidden, weight))
    assert max(chunks) == 3 and sum(chunks[:6]) == int((labels != -100).sum())
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for a, b in zip(got_grads, want_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def _segments(g, n, d, v, dtype=torch.float32):
    """Four objectives' states: plain CE, label smoothing, and soft targets from two different heads."""
    def states(rows):
        return torch.randn(rows, d, generator=g).to(dtype).requires_grad_()

    def labels(rows):
        y = torch.randint(0, v, (rows,), generator=g)
        y[::3] = -100
        return y

    soft_a, soft_b = torch.randn(v, d, generator=g).to(dtype), torch.randn(v, d, generator=g).to(dtype)
    specs = [(0.0, 0.0, None), (0.0, 0.1, None), (0.8, 0.0, soft_a), (0.2, 0.1, soft_b)]
    return [dict(hidden=states(n + k), labels=labels(n + k), soft_hidden=torch.randn(n + k, d, generator=g).to(dtype),
                 soft_weight=w, lam=lam, ls=ls) for k, (lam, ls, w) in enumerate(specs)]


def _joint(segs, weight, bias):
    return cross_entropy.head_cross_entropies(
        [cross_entropy.Scored(s["hidden"], s["labels"],
                              s["soft_hidden"] if s["soft_weight"] is not None else None,
                              LinearHead(s["soft_weight"]) if s["soft_weight"] is not None else None,
                              s["lam"], s["ls"]) for s in segs], LinearHead(weight, bias))


@pytest.mark.parametrize("tokens_per_chunk", [3, 1000])
def test_fused_joint_head_cross_entropy_equals_unfused_per_objective(monkeypatch, tokens_per_chunk):
    """Four objectives through one fused pass (chunks straddling their boundaries) give each objective's
    unfused value, and the gradients of a weighted sum, to float32 precision."""
    g = torch.Generator().manual_seed(1)
    n, d, v = 7, 8, 50
    segs = _segments(g, n, d, v)
    weight = torch.randn(v, d, generator=g, requires_grad=True)
    bias = torch.randn(v, generator=g)
    monkeypatch.setattr(cross_entropy, "LOGITS_PER_CHUNK", tokens_per_chunk * v)
    got = _joint(segs, weight, bias)
    want = [_unfused(s["hidden"], weight, bias, s["labels"], s["soft_hidden"],
                     s["soft_weight"] if s["soft_weight"] is not None else torch.zeros(v, d), s["lam"], s["ls"])
            for s in segs]
    mix = torch.tensor([0.35, 0.2, 0.35, 0.1])
    inputs = [s["hidden"] for s in segs] + [weight]
    got_grads = torch.autograd.grad((torch.stack(got) * mix).sum(), inputs)
    want_grads = torch.autograd.grad((torch.stack(want) * mix).sum(), inputs)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    for a, b in zip(got_grads, want_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_fused_head_cross_entropy_is_one_node_and_bf16_close_to_float32():
    """All objectives share one backward node (one weight gradient), and bf16 weights and states give
    the float32 values to bf16 precision."""
    g = torch.Generator().manual_seed(2)
    n, d, v = 9, 16, 64
    segs = _segments(g, n, d, v)
    weight = torch.randn(v, d, generator=g, requires_grad=True)
    got = _joint(segs, weight, None)
    nodes, stack = set(), [torch.stack(got).sum().grad_fn]
    while stack:
        node = stack.pop()
        if node is not None and node not in nodes:
            nodes.add(node)
            stack.extend(f for f, _ in node.next_functions)
    assert sum(type(f).__name__ == "_FusedHeadCrossEntropyBackward" for f in nodes) == 1
    g16 = torch.Generator().manual_seed(2)
    segs16 = _segments(g16, n, d, v, torch.bfloat16)
    low = _joint(segs16, weight.detach().to(torch.bfloat16).requires_grad_(), None)
    for a, b in zip(low, got):
        assert a.dtype == torch.float32
        assert float(a) == pytest.approx(float(b), rel=3e-2)


def test_fused_head_cross_entropy_with_nothing_scored_is_zero_with_a_dense_head_gradient():
    weight = torch.randn(10, 4, requires_grad=True)
    (loss,) = cross_entropy.head_cross_entropies(
        [cross_entropy.Scored(torch.randn(3, 4, requires_grad=True), torch.full((3,), -100))], LinearHead(weight))
    loss.backward()
    assert float(loss) == 0.0 and weight.grad is not None and not weight.grad.is_sparse

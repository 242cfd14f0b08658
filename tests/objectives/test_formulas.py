"""Each objective's formula against an independent direct computation on small tensors."""

from __future__ import annotations

import math

import pytest
import torch

from comsl.objectives.cml import (ERMObjective, MTPObjective, combine_cml, mask_transcript, mtp_labels, pack_pair,
                                 unpack_pair)
from comsl.objectives.cross_entropy import mixed_cross_entropy
from comsl.objectives.ctc import CTCObjective
from comsl.objectives.matching import MatchingObjective, mismatched_order
from comsl.objectives.st_ddm import STDDMObjective


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
    assert float(STDDMObjective(0.0)(logits, labels, teacher)) == pytest.approx(float(plain), rel=1e-6)
    q = torch.softmax(teacher[valid], -1)
    soft_only = -(q * torch.log_softmax(logits[valid], -1)).sum(-1).mean()
    assert float(STDDMObjective(1.0)(logits, labels, teacher)) == pytest.approx(float(soft_only), rel=1e-6)


def test_no_gradient_reaches_the_teacher(tensors):
    logits, teacher, labels = tensors
    STDDMObjective(0.8)(logits, labels, teacher).backward()
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
    rate = torch.stack([mask_transcript(ids, mask, 0.15, 99, 2)[1][:, 1:5].float().mean() for _ in range(400)])
    assert float(rate.mean()) == pytest.approx(0.15, abs=0.03)


def test_mtp_scores_only_masked_positions():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 5, 9, generator=g)
    ids = torch.tensor([[7, 3, 4, 5, 2]])
    masked = torch.tensor([[False, False, True, False, False]])
    expected = -torch.log_softmax(logits[0, 2], -1)[4]
    assert float(MTPObjective()(logits, mtp_labels(ids, masked))) == pytest.approx(float(expected), rel=1e-6)
    changed = logits.clone()
    changed[0, [0, 1, 3, 4]] += 5 * torch.randn(4, 9, generator=g)
    assert float(MTPObjective()(changed, mtp_labels(ids, masked))) == pytest.approx(float(expected), rel=1e-6)


def test_erm_zero_for_identical_and_mse_otherwise():
    x = torch.randn(2, 3, 4)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    assert float(ERMObjective()(x, x.clone(), mask)) == 0.0
    y = x + 2.0
    y[1, 2] += 100  # a padded position does not count
    assert float(ERMObjective()(x, y, mask)) == pytest.approx(4.0)


def test_cml_combination():
    v = combine_cml(torch.tensor(3.0), torch.tensor(6.0), torch.tensor(9.0), torch.tensor(2.0), 0.1)
    assert float(v) == pytest.approx(6.2)


def test_pack_and_unpack_pair_are_inverse():
    a = torch.arange(2 * 3 * 1, dtype=torch.float).view(2, 3, 1) + 1
    a_mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    b = -torch.arange(2 * 2 * 1, dtype=torch.float).view(2, 2, 1) - 1
    b_mask = torch.tensor([[1, 0], [1, 1]])
    packed, mask, _ = pack_pair(a * a_mask[..., None], a_mask, b * b_mask[..., None], b_mask)
    assert packed[..., 0].tolist() == [[1, 2, 3, -1], [4, -3, -4, 0]]
    assert mask.tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    za, zb = unpack_pair(packed, a_mask, b_mask)
    assert torch.equal(za, a * a_mask[..., None]) and torch.equal(zb, b * b_mask[..., None])


def test_ctc_hand_checkable():
    # one frame per target token, near-certain logits: loss ~ 0; uniform logits: T*log(V) - log(#paths)
    ids = torch.tensor([[9, 3, 4, 2]])  # [lang, 3, 4, </s>]
    tmask = torch.ones_like(ids)
    ctc = CTCObjective(blank_id=0, eos_token_id=2)
    sure = torch.full((1, 2, 5), -30.0)
    sure[0, 0, 3] = sure[0, 1, 4] = 30.0
    assert float(ctc(sure, torch.ones(1, 2, dtype=torch.long), ids, tmask)) < 1e-6
    uniform = torch.zeros(1, 2, 5)
    # exactly one alignment of 2 frames to "3 4"; reduction='mean' divides by the target length 2
    assert float(ctc(uniform, torch.ones(1, 2, dtype=torch.long), ids, tmask)) == pytest.approx(2 * math.log(5) / 2)


def test_matching_hand_checkable():
    m = MatchingObjective()
    assert float(m(torch.tensor([0.0, 0.0]), torch.tensor([1, 0]))) == pytest.approx(math.log(2))
    assert float(m(torch.tensor([20.0, -20.0]), torch.tensor([1, 0]))) < 1e-6
    assert mismatched_order(3, torch.device("cpu")).tolist() == [1, 2, 0]

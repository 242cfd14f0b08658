"""Parameter groups, polynomial decay with warm-up, speech freezing window."""

from __future__ import annotations

import pytest
import torch

from comsl.config import OptimConfig, TrainConfig
from comsl.training.freezing import FreezePolicy
from comsl.training.schedule import PolynomialDecaySchedule, lr_factor, param_groups

from .tiny_task import TinyModel


def test_groups_by_part_without_decay_on_biases_and_norms():
    model = TinyModel()
    groups = param_groups(model, OptimConfig(lr=1e-3, lr_per_part={"adapter": 5e-3}, weight_decay=0.1))
    names = {id(p): n for n, p in model.named_parameters()}
    by_key = {(g["part"], g["weight_decay"]): sorted(names[id(p)] for p in g["params"]) for g in groups}
    assert by_key == {
        ("speech_encoder", 0.1): ["speech.0.weight"], ("speech_encoder", 0.0): ["speech.0.bias"],
        ("adapter", 0.1): ["adapter.weight"], ("adapter", 0.0): ["adapter.bias"],
        ("text_encoder", 0.1): ["encoder.weight"], ("text_encoder", 0.0): ["encoder.bias"],
        ("text_decoder", 0.1): ["decoder.weight"], ("text_decoder", 0.0): ["decoder.bias"],
        ("other", 0.0): ["norm.bias", "norm.weight"],
    }
    assert {g["part"]: g["peak_lr"] for g in groups}["adapter"] == 5e-3
    assert {g["part"]: g["peak_lr"] for g in groups}["text_decoder"] == 1e-3


def test_a_model_without_part_of_is_all_other():
    groups = param_groups(torch.nn.Linear(3, 2), OptimConfig())
    assert [(g["part"], g["weight_decay"]) for g in groups] == [("other", 0.1), ("other", 0.0)]


def test_polynomial_decay_golden_values():
    assert [lr_factor(s, warmup_steps=4, max_steps=12, power=2.0) for s in (0, 3, 4, 6, 8, 12)] == pytest.approx(
        [0.25, 1.0, 1.0, 0.5625, 0.25, 0.0])


def test_speech_group_lr_is_zero_while_frozen_and_end_lr_is_reached():
    model = TinyModel()
    opt = torch.optim.AdamW(param_groups(model, OptimConfig(lr=1.0)))
    policy = FreezePolicy.from_config(TrainConfig(max_steps=10, freeze_speech_fraction=0.3), model)
    assert policy.speech_until == 3
    sched = PolynomialDecaySchedule(opt, warmup_steps=0, max_steps=10, power=1.0, end_lr=0.1,
                                    frozen=policy.frozen)
    sched.apply()
    seen = []
    for _ in range(10):
        seen.append({g["part"]: round(g["lr"], 4) for g in opt.param_groups})
        sched.step()
    assert [s["speech_encoder"] for s in seen[:4]] == [0.0, 0.0, 0.0, 0.73]
    assert [s["adapter"] for s in seen[:4]] == [1.0, 0.91, 0.82, 0.73]
    assert seen[-1]["adapter"] == 0.19 and sched.lr_for(opt.param_groups[0], 10) == pytest.approx(0.1)

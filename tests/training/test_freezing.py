"""One freeze policy for both engines: the speech blocks frozen for the first updates, static switches."""

from __future__ import annotations

import pytest
import torch

from comsl.config import TrainConfig
from comsl.parts import SPEECH, TEXT_DECODER
from comsl.training.freezing import FreezePolicy
from comsl.training.trainer import Trainer

from .tiny_task import TinyModel, configs, make_task


def test_policy_from_config():
    model = TinyModel()
    policy = FreezePolicy.from_config(TrainConfig(max_steps=9, text_decoder_trainable=False), model)
    assert policy.speech_until == 3  # the paper's first third
    assert [sorted(policy.frozen(s)) for s in (0, 2, 3)] == [[SPEECH, TEXT_DECODER], [SPEECH, TEXT_DECODER],
                                                          [TEXT_DECODER]]
    policy.apply_static(model)
    assert {n for n, p in model.named_parameters() if not p.requires_grad} == {"decoder.weight", "decoder.bias"}
    # a model without speech blocks has no freezing window
    assert FreezePolicy.from_config(TrainConfig(max_steps=9), torch.nn.Linear(2, 2)).speech_until == 0


@pytest.mark.parametrize("engine", ["torch", "deepspeed"])
def test_speech_frozen_for_the_first_updates_in_both_engines(tmp_path, engine):
    """Two of four updates frozen: speech weights bit-identical after them while the rest trains, moving
    afterwards; the model ran them without gradient only while frozen."""
    task = make_task()
    model, inner = task.model, task.loss_fn
    snapshots = []

    def loss_fn(m, batch):
        snapshots.append({k: v.detach().clone() for k, v in m.state_dict().items()})
        return inner(m, batch)

    task.loss_fn = loss_fn
    kw = dict(engine=engine, zero_stage=2) if engine == "deepspeed" else {}
    train, optim = configs(str(tmp_path / "run"), max_steps=4, freeze_speech_fraction=0.5, **kw)
    Trainer(task, train, optim).fit()
    assert model.frozen_calls == [True, False]
    first, after_frozen = snapshots[0], snapshots[2]  # as the engine holds them (DeepSpeed may cast to bf16)
    assert all(torch.equal(first[k], after_frozen[k]) for k in first if k.startswith("speech."))
    assert not torch.equal(first["adapter.weight"], after_frozen["adapter.weight"])
    assert not torch.equal(first["speech.0.weight"], model.state_dict()["speech.0.weight"])

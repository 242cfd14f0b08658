"""The real TorchEngine on a non-CPU device (``meta``): every tensor a ComSL step touches is on it."""

from __future__ import annotations

import pytest
import torch
import torch.fx.experimental._config as fx_config
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from comsl.config import ObjectiveConfig, OptimConfig, TrainConfig
from comsl.objectives import ComSLMultiTaskLoss
from comsl.training import engine as engine_module
from comsl.training.schedule import param_groups
from tests.helpers import speech_batch, speech_input

META = torch.device("meta")


class OffDeviceOps(TorchDispatchMode):
    """Records every op that reads a tensor not on ``meta`` (0-dim CPU scalars aside, which every device
    accepts). Data-dependent reads of meta tensors (``.item()``, ``bool()``) get a stand-in value so the
    step runs through: meta tensors have shapes but no data."""

    def __init__(self):
        super().__init__()
        self.off: list[tuple[str, str, tuple]] = []
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.ops += 1
        for t in tree_flatten((args, kwargs))[0]:
            if isinstance(t, torch.Tensor) and t.device != META and t.dim() > 0:
                self.off.append((str(func), str(t.device), tuple(t.shape)))
        if func is torch.ops.aten._local_scalar_dense.default and args[0].device == META:
            return True if args[0].dtype == torch.bool else (1.0 if args[0].is_floating_point() else 3)
        return func(*args, **kwargs)


def test_a_comsl_step_with_the_teacher_runs_on_the_engine_device(make_model, tokenizer, monkeypatch):
    monkeypatch.setattr(engine_module, "_device", lambda local_rank: META)
    monkeypatch.setattr(fx_config, "meta_nonzero_assume_all_nonzero", True)  # boolean indexing on meta
    # keep parameter identity through .to(meta), as .to(cuda) does, so the optimizer's groups stay valid
    monkeypatch.setattr(torch.__future__, "get_swap_module_params_on_conversion", lambda: True)
    model, teacher = make_model(seed=0).train(), make_model(seed=1)
    loss = ComSLMultiTaskLoss(ObjectiveConfig(), mask_token_id=tokenizer.mask_token_id,
                              eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                              teacher=teacher)
    engine = engine_module.TorchEngine(model, loss, param_groups(model, OptimConfig()), optim=OptimConfig(),
                                       train=TrainConfig())
    assert engine.device == META
    for name, module in (("model", model), ("teacher", loss.teacher)):
        off = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.device != META]
        assert not off, f"{name} tensors not on the engine device: {off[:5]}"
    batch = engine.prepare(speech_batch(tokenizer, *speech_input("whisper", [230, 97])))
    assert all(t.device == META for t in tree_flatten(batch)[0] if isinstance(t, torch.Tensor))
    with OffDeviceOps() as seen:
        total, parts = engine.forward(batch, last_micro=True)
        engine.backward(total)
        engine.step()
    assert {"mt", "st", "asr", "cml", "erm"} <= set(parts) and total.device == META
    assert seen.ops > 1000 and not seen.off, seen.off[:10]
    states = [t for s in engine.optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
    assert states and all(t.device == META for t in states if t.dim() > 0)  # moments; the step count is a scalar


@pytest.mark.parametrize("precision", ["bf16"])
def test_autocast_still_applies_when_asked(precision, make_model, tokenizer):
    """The fp32 path enters no autocast context (meta has none); bf16 still runs the step under autocast."""
    model = make_model(seed=0).train()
    loss = ComSLMultiTaskLoss(ObjectiveConfig(w_mt=0.0, w_cml=0.0, w_asr=0.0), mask_token_id=tokenizer.mask_token_id,
                              eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    dtypes = []
    model.text_model.model.decoder.layers[0].fc1.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    engine = engine_module.TorchEngine(model, loss, param_groups(model, OptimConfig()), optim=OptimConfig(),
                                       train=TrainConfig(precision=precision))
    total, _ = engine.forward(engine.prepare(speech_batch(tokenizer, *speech_input("whisper", [230, 97]))),
                              last_micro=True)
    assert torch.isfinite(total) and total.dtype == torch.float32 and dtypes and set(dtypes) == {torch.bfloat16}

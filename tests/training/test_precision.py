"""``train.precision``: bf16 keeps exact resume, the non-finite skip and float32 checkpoints, in both
engines; a CPU without bf16 units falls back to fp32 with one log line; objectives stay float32."""

from __future__ import annotations

import logging

import pytest
import torch
from safetensors.torch import load_file

from comsl.config import ObjectiveConfig, OptimConfig, TrainConfig
from comsl.objectives import ComSLMultiTaskLoss
from comsl.training import precision
from comsl.training.engine import DeepSpeedEngine, TorchEngine
from comsl.training.freezing import FreezePolicy
from comsl.training.schedule import param_groups
from tests.helpers import speech_batch, speech_input

from .tiny_task import assert_same_run, collate, configs, fit, make_task, run_script, trained_params

needs_bf16 = pytest.mark.skipif(not precision.cpu_has_bf16(), reason="this CPU has no bf16 units")
ENGINES = {"torch": {}, "zero2": dict(engine="deepspeed", zero_stage=2)}


@needs_bf16
@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_bf16_exact_resume_in_a_fresh_process(tmp_path, engine):
    kw = dict(max_steps=8, precision="bf16", **ENGINES[engine])
    straight, _ = fit(tmp_path / "a", **kw)
    assert straight.engine.precision == "bf16"
    assert straight.task.loss_fn.logit_dtypes == {torch.bfloat16}
    fit(tmp_path / "b", stop_after=4, **kw)
    args = ["--record", "--precision", "bf16"] + (["--engine", "deepspeed", "--zero-stage", "2"]
                                                  if engine == "zero2" else [])
    assert run_script(tmp_path / "b", *args) == {"step": 8, "resumed_from": 4}
    assert_same_run(tmp_path / "a", tmp_path / "b", trained_params(straight))


@needs_bf16
@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_bf16_nonfinite_step_is_skipped_and_exports_are_float32_masters(tmp_path, engine):
    out = tmp_path / "run"
    trainer, res = fit(out, task=make_task(nan_steps={2}), max_steps=4, save_every=1, keep_last=10,
                       checkpoint_export=True, precision="bf16", **ENGINES[engine])
    assert res.nonfinite_skipped == 1 and trainer.engine.precision == "bf16"
    w = {s: load_file(str(out / "checkpoints" / f"step_{s}" / "model" / "model.safetensors")) for s in (2, 3, 4)}
    assert all(torch.equal(w[2][k], w[3][k]) for k in w[2])
    assert not torch.equal(w[3]["decoder.weight"], w[4]["decoder.weight"])
    final = load_file(str(out / "final" / "model.safetensors"))
    assert {v.dtype for v in final.values()} == {torch.float32}
    if engine == "zero2":
        # The export is DeepSpeed's float32 master copy (read back by DeepSpeed's own tool), not the
        # bf16 training copy upcast.
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
        master = get_fp32_state_dict_from_zero_checkpoint(str(out / "checkpoints" / "step_4"), tag="deepspeed")
        for k, v in final.items():
            assert torch.equal(v, master["model." + k].float()), k
        assert any(not torch.equal(v, v.bfloat16().float()) for v in final.values())
    else:
        opt = torch.load(out / "checkpoints" / "step_4" / "optimizer.pt", weights_only=True)["state"]
        assert {t.dtype for s in opt.values() for t in s.values() if t.is_floating_point()} == {torch.float32}
        # The model trains bf16 copies; the export and the checkpoint are the float32 masters, not those upcast.
        assert {p.dtype for p in trainer.task.model.parameters()} == {torch.bfloat16}
        master = trained_params(trainer)
        assert {v.dtype for v in master.values()} == {torch.float32}
        ckpt = load_file(str(out / "checkpoints" / "step_4" / "model.safetensors"))
        for k, v in final.items():
            assert torch.equal(v, master[k]) and torch.equal(ckpt[k], master[k]), k
        assert any(not torch.equal(v, v.bfloat16().float()) for v in final.values())


def _comsl_engine(make_model, tokenizer, **train):
    """A TorchEngine over a tiny ComSL model with the whole objective and its frozen MT teacher."""
    model, teacher = make_model(seed=0).train(), make_model(seed=1)
    loss = ComSLMultiTaskLoss(ObjectiveConfig(), mask_token_id=tokenizer.mask_token_id, teacher=teacher,
                              eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    cfg = TrainConfig(**train)
    FreezePolicy.from_config(cfg, model).apply_static(model)
    optim = OptimConfig(lr=1e-3, lr_per_part={"adapter": 2e-3})
    return TorchEngine(model, loss, param_groups(model, optim), optim=optim, train=cfg)


@needs_bf16
def test_bf16_trains_bf16_weights_and_the_optimizer_owns_float32_masters(make_model, tokenizer):
    before = {n: p.detach().clone() for n, p in make_model(seed=0).named_parameters()}
    engine = _comsl_engine(make_model, tokenizer, precision="bf16", speech_trainable=False)
    model, teacher = engine.model, engine.module._loss_fn.teacher
    assert {p.dtype for p in [*model.parameters(), *teacher.parameters()]} == {torch.bfloat16}
    opt_params = [p for g in engine.optimizer.param_groups for p in g["params"]]
    assert {p.dtype for p in opt_params} == {torch.float32}
    assert not {id(p) for p in opt_params} & {id(p) for p in model.parameters()}
    # per-part groups and LRs carried over; the statically frozen speech encoder is left out
    assert {(g["part"], g["peak_lr"]) for g in engine.optimizer.param_groups} == {
        ("adapter", 2e-3), ("text_encoder", 1e-3), ("text_decoder", 1e-3)}
    with engine.gathered_params(fp32=True):
        assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # masters, unrounded

    batch = engine.prepare(speech_batch(tokenizer, *speech_input("whisper", [230, 97])))
    assert batch["speech"].dtype == torch.bfloat16
    total, _ = engine.forward(batch, last_micro=True)
    assert total.dtype == torch.float32
    engine.backward(total)
    assert engine.step() is True
    assert all(p.grad is None for p in model.parameters())
    states = [t for st in engine.optimizer.state.values() for t in st.values() if t.is_floating_point()]
    assert states and {t.dtype for t in states} == {torch.float32}
    with engine.gathered_params(fp32=True):
        master = {n: p.detach().clone() for n, p in model.named_parameters()}
    for n, p in model.named_parameters():
        assert torch.equal(p, master[n].bfloat16()), n  # the bf16 copy is the updated master rounded
    moved = {model.part_of(n) for n in master if not torch.equal(master[n], before[n])}
    assert moved == {"adapter", "text_encoder", "text_decoder"}  # the frozen speech encoder's masters stay


@needs_bf16
def test_deepspeed_bf16_runs_the_frozen_teacher_in_bf16_like_the_student(make_model, tokenizer):
    model, teacher = make_model(seed=0).train(), make_model(seed=1)
    loss = ComSLMultiTaskLoss(ObjectiveConfig(), mask_token_id=tokenizer.mask_token_id, teacher=teacher,
                              eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    optim = OptimConfig(lr=1e-3)
    engine = DeepSpeedEngine(model, loss, param_groups(model, optim), optim=optim,
                             train=TrainConfig(engine="deepspeed", zero_stage=2, precision="bf16"))
    assert {p.dtype for p in [*model.parameters(), *teacher.parameters()]} == {torch.bfloat16}
    total, parts = engine.forward(engine.prepare(speech_batch(tokenizer, *speech_input("whisper", [230, 97]))),
                                  last_micro=True)
    assert total.dtype == torch.float32 and torch.isfinite(total) and "mt" in parts
    engine.backward(total)


@needs_bf16
def test_bf16_training_overfits_a_batch():
    """The masters' updates reach the bf16 weights the forward uses: the loss of one batch goes down."""
    task = make_task()
    train, optim = configs("unused", precision="bf16")
    engine = TorchEngine(task.model, task.loss_fn, param_groups(task.model, optim), optim=optim, train=train)
    task.model.eval()  # no dropout: the same loss function at every step
    batch = engine.prepare(collate(task.dataset[:16]))
    seen = []
    for _ in range(30):
        total, _ = engine.forward(batch, last_micro=True)
        seen.append(float(total.detach()))
        engine.backward(total)
        assert engine.step() is True
    assert engine.precision == "bf16" and next(task.model.parameters()).dtype == torch.bfloat16
    assert seen[-1] < 0.5 * seen[0], seen


def test_fp16_uses_a_loss_scaler_saved_for_resume(tmp_path):
    trainer, _ = fit(tmp_path / "run", max_steps=2, precision="fp16")
    assert trainer.engine.scaler.is_enabled()
    assert "scaler" in torch.load(tmp_path / "run" / "checkpoints" / "step_2" / "rank_0.pt", weights_only=False)


def test_cpu_without_bf16_units_falls_back_to_fp32_with_one_log_line(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    with caplog.at_level(logging.WARNING, logger="comsl.training.precision"):
        trainer, _ = fit(tmp_path / "run", max_steps=2, precision="bf16")
    assert isinstance(trainer.engine, TorchEngine) and trainer.engine.precision == "fp32"
    assert trainer.task.loss_fn.logit_dtypes == {torch.float32}
    lines = [r.getMessage() for r in caplog.records if "bf16" in r.getMessage()]
    assert len(lines) == 1 and "no bf16 matrix units" in lines[0] and "fp32" in lines[0]


def test_resolve_precision():
    cpu = torch.device("cpu")
    assert precision.resolve_precision("fp32", cpu) == "fp32"
    assert precision.resolve_precision("fp16", cpu) == "fp16"
    expected = "bf16" if precision.cpu_has_bf16() else "fp32"
    assert precision.resolve_precision("auto", cpu) == precision.resolve_precision("bf16", cpu) == expected


def test_objectives_take_softmax_and_losses_in_float32_under_bf16(make_model, tokenizer, monkeypatch):
    from comsl.data.batching import pad_ids
    from comsl.data.processor import encode

    from comsl.objectives import cross_entropy

    seen = []
    # every softmax of the step: the fused cross-entropy's (in place), attention's explicit form, any other
    for owner, name in ((torch.nn.functional, "softmax"), (torch.nn.functional, "log_softmax"),
                        (torch, "softmax"), (cross_entropy, "_softmax_")):
        real = getattr(owner, name)

        def spy(x, *a, _real=real, **k):
            seen.append(x.dtype)
            return _real(x, *a, **k)

        monkeypatch.setattr(owner, name, spy)
    model = make_model().train()
    teacher = make_model(seed=1)
    loss = ComSLMultiTaskLoss(ObjectiveConfig(), mask_token_id=tokenizer.mask_token_id, teacher=teacher,
                              eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    tr, tr_mask = pad_ids([encode(tokenizer, "le chat est assis", "fr")], tokenizer.pad_token_id)
    tg, tg_mask = pad_ids([encode(tokenizer, "the cat sat", "en")], tokenizer.pad_token_id)
    batch = dict(speech=torch.randn(1, 80, 120), speech_mask=torch.ones(1, 120, dtype=torch.long),
                 src_lang_ids=tr[:, 0].clone(), transcript_ids=tr, transcript_mask=tr_mask,
                 translation_ids=tg, translation_mask=tg_mask)
    torch.manual_seed(0)
    ref, _ = loss(model, batch)
    seen.clear()
    torch.manual_seed(0)
    with precision.autocast(torch.device("cpu"), "bf16"):
        total, parts = loss(model, batch)
    assert seen and set(seen) == {torch.float32}
    assert total.dtype == torch.float32 and all(v.dtype == torch.float32 for v in parts.values())
    assert total.item() == pytest.approx(ref.item(), rel=0.05)

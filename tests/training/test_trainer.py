"""End-to-end trainer behaviour on the tiny task (plain PyTorch engine, CPU)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from comsl.errors import CheckpointError, ComSLError
from comsl.training import checkpoint as ckpt
from comsl.training.logging import read_metrics
from comsl.training.trainer import Trainer

from .tiny_task import TinyModel, assert_same_run, clean_env, configs, fit, losses, make_task, params

SCRIPT = Path(__file__).with_name("tiny_task.py")


def test_exact_resume_in_a_fresh_process(tmp_path):
    straight, res = fit(tmp_path / "a", max_steps=8)
    assert res.finished and res.step == 8
    _, half = fit(tmp_path / "b", max_steps=8, stop_after=4)
    assert half.step == 4 and not half.finished and not (tmp_path / "b" / "final").exists()
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "b"), "--record"],
                          env=clean_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"step": 8, "resumed_from": 4}
    assert_same_run(tmp_path / "a", tmp_path / "b", params(straight.task.model))
    # 8 logged steps, lr of each update recorded (warm-up 3 steps to 0.03, then power-2 decay towards 0 at step 8).
    records = losses(tmp_path / "a")
    assert [r["step"] for r in records] == list(range(1, 9))
    assert [round(r["lr"], 6) for r in records] == [0.01, 0.02, 0.03, 0.03, 0.0192, 0.0108, 0.0048, 0.0012]
    assert {"loss/total", "loss/ce", "loss/aux", "nonfinite_skipped"} <= records[0].keys()
    final = TinyModel.from_pretrained(str(tmp_path / "a" / "final"))
    for k, v in final.state_dict().items():
        assert torch.equal(v, straight.task.model.state_dict()[k])
    assert (tmp_path / "a" / "loss_curve.png").stat().st_size > 1000
    assert list((tmp_path / "a" / "tensorboard").glob("events.out.tfevents.*"))
    assert (tmp_path / "a" / "config.yaml").is_file()


def test_failed_save_keeps_previous_checkpoint_and_resume_uses_it(tmp_path, monkeypatch):
    out = tmp_path / "run"
    real = ckpt.write_common_files

    def failing(tmp, **kw):
        if kw["trainer_state"]["step"] == 4:
            raise OSError("disk full (injected)")
        real(tmp, **kw)

    monkeypatch.setattr(ckpt, "write_common_files", failing)
    with pytest.raises(OSError, match="injected"):
        fit(out, max_steps=8, save_every=2)
    root = out / "checkpoints"
    assert (root / "step_2" / ckpt.MARKER).is_file()
    assert not (root / "step_4").exists()
    assert (root / "step_4.tmp").is_dir() and not (root / "step_4.tmp" / ckpt.MARKER).exists()
    before = load_file(str(root / "step_2" / "model.safetensors"))
    monkeypatch.setattr(ckpt, "write_common_files", real)
    _, res = fit(out, max_steps=8, save_every=2, stop_after=3)
    assert res.resumed_from == 2 and res.step == 3
    after = load_file(str(root / "step_2" / "model.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_nonfinite_step_leaves_parameters_and_optimizer_untouched(tmp_path):
    out = tmp_path / "run"
    task = make_task(nan_steps={2})
    _, res = fit(out, task=task, max_steps=4, save_every=1, keep_last=10)
    assert res.nonfinite_skipped == 1
    root = out / "checkpoints"
    w2, w3 = (load_file(str(root / f"step_{s}" / "model.safetensors")) for s in (2, 3))
    assert all(torch.equal(w2[k], w3[k]) for k in w2)
    o2, o3 = (torch.load(root / f"step_{s}" / "optimizer.pt", weights_only=True)["state"] for s in (2, 3))
    for i in o2:
        for k in o2[i]:
            assert torch.equal(torch.as_tensor(o2[i][k]), torch.as_tensor(o3[i][k])), (i, k)
    records = read_metrics(out / "metrics.jsonl")
    assert "loss/total" not in records[2] and records[2]["nonfinite_skipped"] == 1
    assert "loss/total" in records[3] and records[1]["nonfinite_skipped"] == 0
    # The update after the skip changed the weights again.
    w4 = load_file(str(root / "step_4" / "model.safetensors"))
    assert not torch.equal(w3["decoder.weight"], w4["decoder.weight"])


def test_consecutive_nonfinite_steps_stop_the_run(tmp_path):
    task = make_task(nan_steps={1, 2, 3, 4})
    with pytest.raises(ComSLError, match="3 consecutive steps had a non-finite loss"):
        fit(tmp_path / "run", task=task, max_steps=8, max_nonfinite_steps=3)


def test_speech_encoder_frozen_for_the_first_fraction(tmp_path):
    task = make_task()
    speech_lr, trainer_box = [], []
    inner = task.loss_fn

    def loss_fn(model, batch, step):
        groups = trainer_box[0].engine.optimizer.param_groups
        speech_lr.append((step, [g["lr"] for g in groups if g["part"] == "speech_encoder"]))
        return inner(model, batch, step)

    task.loss_fn = loss_fn
    start = {k: v.clone() for k, v in task.model.speech.state_dict().items()}
    train, optim = configs(str(tmp_path / "run"), max_steps=4, freeze_speech_fraction=0.5)
    trainer = Trainer(task, train, optim)
    trainer_box.append(trainer)
    trainer._setup()
    after_frozen = {}

    def snapshot(model, batch, step):
        if step == 2:
            after_frozen.update({k: v.clone() for k, v in model.speech.state_dict().items()})
        return loss_fn(model, batch, step)

    trainer.engine.module._loss_fn = snapshot
    trainer.fit()
    assert task.model.frozen_calls == [True, False]
    assert [s for s, _ in speech_lr] == [0, 1, 2, 3]
    assert all(lr == 0.0 for _, lrs in speech_lr[:2] for lr in lrs)
    assert all(lr > 0.0 for _, lrs in speech_lr[2:] for lr in lrs)
    assert all(torch.equal(start[k], after_frozen[k]) for k in start)
    assert not torch.equal(start["0.weight"], task.model.speech.state_dict()["0.weight"])


def test_static_trainable_switch_excludes_a_part(tmp_path):
    task = make_task()
    decoder = task.model.decoder.weight.detach().clone()
    trainer, _ = fit(tmp_path / "run", task=task, max_steps=2, text_decoder_trainable=False)
    assert {g["part"] for g in trainer.engine.optimizer.param_groups} == {
        "speech_encoder", "adapter", "text_encoder", "other"}
    assert torch.equal(task.model.decoder.weight, decoder)


def test_retention_keeps_last_and_best_and_exports_best(tmp_path):
    out = tmp_path / "run"
    task = make_task(evaluate=True)
    fit(out, task=task, max_steps=8, save_every=2, keep_last=1, keep_best=1, eval_every=2, lr=0.3)
    dev = [r for r in read_metrics(out / "metrics.jsonl") if "dev/bleu_avg" in r]
    assert [r["step"] for r in dev] == [2, 4, 6, 8] and all("dev/bleu/fr" in r for r in dev)
    best = max(dev, key=lambda r: (r["dev/bleu_avg"], -r["step"]))["step"]
    kept = sorted(s for s, _ in ckpt.list_checkpoints(out / "checkpoints")[0])
    assert kept == sorted({8, best})
    assert (out / "best" / "model.safetensors").is_file() and (out / "final" / "model.safetensors").is_file()


def test_incomplete_checkpoints_are_ignored(tmp_path):
    root = tmp_path / "checkpoints"
    (root / "step_5").mkdir(parents=True)
    (root / "step_3.tmp").mkdir()
    (root / "step_2").mkdir()
    (root / "step_2" / ckpt.MARKER).write_text("ok\n")
    complete, ignored = ckpt.list_checkpoints(root)
    assert [s for s, _ in complete] == [2]
    assert sorted(d.name for d, _ in ignored) == ["step_3.tmp", "step_5"]


def test_structural_mismatch_is_refused_with_the_differences(tmp_path):
    out = tmp_path / "run"
    fit(out, max_steps=8, stop_after=2)
    with pytest.raises(CheckpointError) as err:
        fit(out, task=make_task(hidden=12), max_steps=8)
    msg = str(err.value)
    assert "speech.0.weight: checkpoint shape (16, 8) vs model shape (12, 8)" in msg
    assert "does not match the model" in msg


def test_batch_that_failed_to_decode_is_skipped(tmp_path):
    task = make_task()
    inner = task.collate_fn
    task.collate_fn = lambda items: None if any(e["id"] == "utt0" for e in items) else inner(items)
    trainer, res = fit(tmp_path / "run", task=task, max_steps=12)
    assert res.finished and trainer.empty_batches == 1
    assert [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")] == list(range(1, 13))

"""End-to-end trainer behaviour on the tiny task (plain PyTorch engine, CPU)."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from comsl import run_layout as layout
from comsl.errors import CheckpointError, ComSLError
from comsl.training import checkpoint as ckpt
from comsl.training.logging import read_metrics
from comsl.training.trainer import Trainer

from .tiny_task import TinyModel, assert_same_run, clean_env, configs, fit, losses, make_task, trained_params

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
    assert_same_run(tmp_path / "a", tmp_path / "b", trained_params(straight))
    # 8 logged steps, lr of each update recorded (warm-up 3 steps to 0.03, then power-2 decay towards 0 at step 8).
    records = losses(tmp_path / "a")
    assert [r["step"] for r in records] == list(range(1, 9))
    assert [round(r["lr"], 6) for r in records] == [0.01, 0.02, 0.03, 0.03, 0.0192, 0.0108, 0.0048, 0.0012]
    assert {"loss/total", "loss/ce", "loss/aux", "nonfinite_skipped"} <= records[0].keys()
    final = TinyModel.from_pretrained(str(tmp_path / "a" / "final"))
    master = trained_params(straight)
    for k, v in final.state_dict().items():
        assert torch.equal(v, master[k])
    assert (tmp_path / "a" / "loss_curve.png").stat().st_size > 1000
    assert list((tmp_path / "a" / "tensorboard").glob("events.out.tfevents.*"))
    assert (tmp_path / "a" / "config.yaml").is_file()


def test_exact_resume_with_extra_mt_text_in_a_fresh_process(tmp_path):
    """The second stream (stage 2's data.mt_manifest) continues mid-epoch after a resume: its position is
    saved with the trainer state."""
    a, b = tmp_path / "a", tmp_path / "b"
    straight, _ = fit(a, task=make_task(record=a / "batches_rank0.jsonl", mt_text=True), max_steps=8)
    fit(b, task=make_task(record=b / "batches_rank0.jsonl", mt_text=True), max_steps=8, stop_after=4)
    state = json.loads((b / "checkpoints" / "step_4" / "trainer_state.json").read_text())
    assert (state["mt_epoch"], state["mt_batch_in_epoch"]) == (0, 4)  # mid-epoch: 4 of its 6 batches
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(b), "--record", "--mt-text"],
                          env=clean_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_run(a, b, trained_params(straight))
    seen = [json.loads(line)["mt_ids"] for line in (a / "batches_rank0.jsonl").read_text().splitlines()]
    assert len(seen) == 8 and sum(map(len, seen[:6])) == 20 and seen[6] != seen[0]  # an epoch, then a new order


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


@pytest.mark.parametrize("where", ["loss", "gradient"])
def test_nonfinite_step_leaves_parameters_and_optimizer_untouched(tmp_path, where):
    out = tmp_path / "run"
    # a NaN loss, or a finite loss whose gradient is NaN (issue 17.5: skipped alike)
    task = make_task(nan_steps={2}) if where == "loss" else make_task(nan_grad_steps={2})
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

    def loss_fn(model, batch):
        groups = trainer_box[0].engine.optimizer.param_groups
        speech_lr.append((len(speech_lr), [g["lr"] for g in groups if g["part"] == "speech_encoder"]))
        return inner(model, batch)

    task.loss_fn = loss_fn
    start = {k: v.clone() for k, v in task.model.speech.state_dict().items()}
    train, optim = configs(str(tmp_path / "run"), max_steps=4, freeze_speech_fraction=0.5)
    trainer = Trainer(task, train, optim)
    trainer_box.append(trainer)
    trainer._setup()
    after_frozen = {}

    def snapshot(model, batch):
        if len(speech_lr) == 2:  # the third step's forward: two frozen updates done
            after_frozen.update({k[len("speech."):]: v for k, v in trained_params(trainer).items()
                                 if k.startswith("speech.")})
        return loss_fn(model, batch)

    trainer.engine.module._loss_fn = snapshot
    trainer.fit()
    assert task.model.frozen_calls == [True, False]
    assert [s for s, _ in speech_lr] == [0, 1, 2, 3]
    assert all(lr == 0.0 for _, lrs in speech_lr[:2] for lr in lrs)
    assert all(lr > 0.0 for _, lrs in speech_lr[2:] for lr in lrs)
    assert all(torch.equal(start[k], after_frozen[k]) for k in start)
    assert not torch.equal(start["0.weight"], trained_params(trainer)["speech.0.weight"])


def test_static_trainable_switch_excludes_a_part(tmp_path):
    task = make_task()
    decoder = task.model.decoder.weight.detach().clone()
    trainer, _ = fit(tmp_path / "run", task=task, max_steps=2, text_decoder_trainable=False)
    assert {g["part"] for g in trainer.engine.optimizer.param_groups} == {
        "speech_encoder", "adapter", "text_encoder", "other"}
    assert torch.equal(trained_params(trainer)["decoder.weight"], decoder)


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


def test_resume_with_another_stage_is_refused(tmp_path):
    out = tmp_path / "run"
    fit(out, max_steps=8, stop_after=2, stage="mt")
    with pytest.raises(CheckpointError, match=r"step_2: written by a train.stage=mt run, this run is "
                                              r"train.stage=comsl; each stage needs its own train.out_dir"):
        fit(out, max_steps=8, stage="comsl")
    assert not (out / "checkpoints" / "step_4").exists() and not (out / "final").exists()


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))


CORRUPTIONS = {
    "truncated model.safetensors": ("model.safetensors", lambda p: p.write_bytes(p.read_bytes()[:100])),
    "bit-flipped model.safetensors": ("model.safetensors", flip_byte),
    "zero-length optimizer.pt": ("optimizer.pt", lambda p: p.write_bytes(b"")),
    "truncated rank_0.pt": ("rank_0.pt", lambda p: p.write_bytes(p.read_bytes()[:-10])),
    "bad trainer_state.json": ("trainer_state.json", lambda p: p.write_text('{"step": 4,')),
    "half-deleted (trainer_state.json gone)": ("trainer_state.json", lambda p: p.unlink()),
}


@pytest.mark.parametrize("damage", sorted(CORRUPTIONS))
def test_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog, damage):
    out = tmp_path / "run"
    fit(out, max_steps=8, save_every=2, stop_after=4, keep_last=2)
    root = out / "checkpoints"
    name, corrupt = CORRUPTIONS[damage]
    corrupt(root / "step_4" / name)
    with caplog.at_level(logging.WARNING):
        _, res = fit(out, max_steps=8, save_every=2, stop_after=6, keep_last=2)
    assert res.resumed_from == 2 and res.step == 6
    assert f"step_4/{name}" in caplog.text and "moved aside to step_4.corrupt" in caplog.text
    assert "falling back to " + str(root / "step_2") in caplog.text
    assert (root / "step_4.corrupt" / name).exists() or name == "trainer_state.json"
    assert sorted(s for s, _ in layout.list_checkpoints(root)[0]) == [4, 6]


def test_corrupt_only_checkpoint_stops_with_one_line_naming_the_file(tmp_path):
    out = tmp_path / "run"
    fit(out, max_steps=8, save_every=2, stop_after=2)
    flip_byte(out / "checkpoints" / "step_2" / "model.safetensors")
    with pytest.raises(CheckpointError) as err:
        fit(out, max_steps=8, save_every=2)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(str(out / "checkpoints" / "step_2" / "model.safetensors"))
    assert "sha256 differs" in msg and "no older checkpoint verifies" in msg
    assert (out / "checkpoints" / "step_2").is_dir()  # nothing moved: the user decides


def test_nonfinite_update_never_reaches_disk(tmp_path):
    out = tmp_path / "run"
    train, optim = configs(str(out), max_steps=8, save_every=2, keep_last=10)
    trainer = Trainer(make_task(), train, optim)
    trainer._setup()
    step = trainer.engine.step

    def nan_update():
        step()
        if trainer.step == 2:  # the third update diverges although its loss was finite
            with torch.no_grad():
                trainer.task.model.adapter.weight.fill_(float("nan"))

    trainer.engine.step = nan_update
    with pytest.raises(ComSLError, match=r"step 4: 1 parameter\(s\) hold NaN/inf after the update "
                                         r"\(first: adapter.weight\); no checkpoint written"):
        trainer.fit()
    root = out / "checkpoints"
    assert [s for s, _ in layout.list_checkpoints(root)[0]] == [2] and not (out / "final").exists()
    for f in root.rglob("*.safetensors"):
        assert all(bool(torch.isfinite(t).all()) for t in load_file(str(f)).values()), f


def test_metrics_history_survives_a_kill_while_it_is_shortened(tmp_path, monkeypatch):
    out = tmp_path / "run"
    fit(out, max_steps=8, save_every=4, stop_after=4)
    metrics = out / "metrics.jsonl"
    # Records past the checkpoint, as a run killed after step 4 leaves them (the last one cut short).
    with metrics.open("a") as f:
        f.write(json.dumps({"step": 5, "loss/total": 1.0}) + "\n" + '{"step": 6, "loss')
    before = metrics.read_text()

    real_write = Path.write_text

    def killed_midway(self, text, *a, **kw):
        if not self.name.startswith("metrics.jsonl"):
            return real_write(self, text, *a, **kw)
        with open(self, "w") as f:  # truncates, writes half, dies
            f.write(text[: len(text) // 2])
        raise KeyboardInterrupt("killed while rewriting the history")

    monkeypatch.setattr(Path, "write_text", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        fit(out, max_steps=8, save_every=4)
    monkeypatch.undo()
    assert metrics.read_text() == before
    fit(out, max_steps=8, save_every=4)
    assert [r["step"] for r in read_metrics(metrics)] == list(range(1, 9))


def test_interrupted_retention_leaves_nothing_that_breaks_later_saves(tmp_path, monkeypatch):
    out = tmp_path / "run"
    fit(out, max_steps=12, save_every=2, stop_after=4, keep_last=10)
    root = out / "checkpoints"
    (root / "step_2" / "trainer_state.json").unlink()  # marker kept: a deletion interrupted midway
    _, res = fit(out, max_steps=12, save_every=2, stop_after=8, keep_last=1)
    assert res.resumed_from == 4 and res.step == 8
    assert [s for s, _ in layout.list_checkpoints(root)[0]] == [8]
    # Deletion removes the marker first: interrupted after that, the leftover is ignored, never resumed.
    monkeypatch.setattr(ckpt.shutil, "rmtree", lambda *a, **kw: None)
    fit(out, max_steps=12, save_every=2, stop_after=10, keep_last=1)
    assert (root / "step_8").is_dir() and not (root / "step_8" / layout.MARKER).exists()
    assert [s for s, _ in layout.list_checkpoints(root)[0]] == [10]

"""comsl/run_layout.py: checkpoint listing, checksums, which directory evaluate loads, and the errors otherwise."""

import json
import os

import pytest

from comsl.errors import CheckpointError
from comsl.run_layout import MARKER, list_checkpoints, resolve_checkpoint


def make_model_dir(path, model_type="comsl"):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"model_type": model_type, "architectures": ["ComSLModel"]
                                                  if model_type == "comsl" else []}))
    (path / "model.safetensors").write_bytes(b"\0")
    return path


def test_exported_dir_is_itself(tmp_path):
    d = make_model_dir(tmp_path / "export")
    assert resolve_checkpoint(d) == d


def test_run_dir_prefers_best_then_final_then_export(tmp_path):
    run = tmp_path / "run"
    make_model_dir(run / "export")
    assert resolve_checkpoint(run) == run / "export"
    make_model_dir(run / "final" / "model")
    assert resolve_checkpoint(run) == run / "final" / "model"
    make_model_dir(run / "best")
    assert resolve_checkpoint(run) == run / "best"


def make_step(run, name, marker=True, model=True):
    d = run / "checkpoints" / name
    d.mkdir(parents=True)
    if model:
        make_model_dir(d / "model")
    if marker:
        (d / MARKER).write_text("")
    return d


def test_newest_complete_training_checkpoint(tmp_path):
    run = tmp_path / "run"
    make_step(run, "step_900")
    make_step(run, "step_1000")
    make_step(run, "step_1100.tmp", marker=False)  # interrupted save
    make_step(run, "step_1200", marker=False)  # no marker: never used
    make_step(run, "step_1300", model=False)  # checkpoint without an export
    os.utime(run / "checkpoints" / "step_900", (2e9, 2e9))  # mtime must not beat the step number
    assert resolve_checkpoint(run) == run / "checkpoints" / "step_1000" / "model"
    assert resolve_checkpoint(run / "checkpoints" / "step_900") == run / "checkpoints" / "step_900" / "model"


def test_incomplete_checkpoints_are_ignored(tmp_path):
    root = tmp_path / "checkpoints"
    (root / "step_5").mkdir(parents=True)
    (root / "step_3.tmp").mkdir()
    (root / "step_2").mkdir()
    (root / "step_2" / MARKER).write_text("ok\n")
    complete, ignored = list_checkpoints(root)
    assert [s for s, _ in complete] == [2]
    assert sorted(d.name for d, _ in ignored) == ["step_3.tmp", "step_5"]


def test_error_lists_skipped_training_checkpoints(tmp_path):
    run = tmp_path / "run"
    make_step(run, "step_5", model=False)
    make_step(run, "step_6", marker=False)
    with pytest.raises(CheckpointError, match=r"step_5: no exported model/.*step_6: no COMPLETE marker"):
        resolve_checkpoint(run)


def test_errors_name_the_dir_and_what_was_expected(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_checkpoint(tmp_path / "missing")
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(CheckpointError, match="got a file"):
        resolve_checkpoint(tmp_path / "f.txt")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match=r"empty: not a ComSL checkpoint \(no config.json\); expected"):
        resolve_checkpoint(empty)
    whisper = make_model_dir(tmp_path / "whisper", model_type="whisper")
    with pytest.raises(CheckpointError, match="not a ComSL config \\(model_type=whisper\\)"):
        resolve_checkpoint(whisper)
    no_weights = make_model_dir(tmp_path / "nw")
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        resolve_checkpoint(no_weights)

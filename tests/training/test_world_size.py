"""Checkpoints across world sizes: a 2-rank ZeRO-2 checkpoint resumed on 1 rank is refused with a message
that says how to resume it (the optimizer state is partitioned by rank)."""

from __future__ import annotations

import subprocess
import sys

from tests.training import tiny_task
from tests.training.tiny_task import clean_env, run_script


def test_two_rank_zero2_checkpoint_on_one_rank_is_refused_with_how_to_resume(tmp_path):
    out = tmp_path / "run"
    zero2 = ("--engine", "deepspeed", "--zero-stage", "2")
    assert run_script(out, "--stop-after", "2", "--save-every", "2", *zero2, torchrun=True) == {
        "step": 2, "resumed_from": None}
    proc = subprocess.run([sys.executable, tiny_task.__file__, "--out", str(out), *zero2], env=clean_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "step_2: written by 2 ranks under ZeRO" in proc.stderr and "this run has 1" in proc.stderr
    assert "resume with 2 processes (torchrun --nproc_per_node 2" in proc.stderr
    assert run_script(out, *zero2, torchrun=True) == {"step": 8, "resumed_from": 2}  # 2 ranks resume

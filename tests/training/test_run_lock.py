"""One run per run directory: a second ``train`` on a live run's out_dir is refused naming the holder;
the lock a killed run leaves behind is taken over (two real processes)."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from comsl.training.run_lock import LOCK

from .tiny_task import clean_env, fit

SCRIPT = Path(__file__).with_name("tiny_task.py")
HOLD = ("import sys, time\nfrom comsl.training.run_lock import RunLock\n"
        "RunLock(sys.argv[1]).acquire()\nprint('locked', flush=True)\ntime.sleep(120)\n")


def start_holder(out: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], env=clean_env(), stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_run_on_a_live_run_dir_exits_naming_the_holder(tmp_path):
    out = tmp_path / "run"
    holder = start_holder(out)
    try:
        second = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--max-steps", "2"],
                                env=clean_env(), capture_output=True, text=True, timeout=300)
    finally:
        holder.kill()
        holder.wait()
    assert second.returncode != 0
    assert f"PID {holder.pid} on host {socket.gethostname()}" in second.stderr
    assert "already in use by another comsl train" in second.stderr
    assert not (out / "checkpoints").exists() and not (out / "metrics.jsonl").exists()


def test_lock_left_by_a_killed_run_is_taken_over(tmp_path, caplog):
    out = tmp_path / "run"
    holder = start_holder(out)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert json.loads((out / LOCK).read_text())["pid"] == holder.pid  # the dead run's lock file remains
    with caplog.at_level(logging.WARNING):
        _, res = fit(out, max_steps=2)
    assert res.finished
    assert f"taking over the lock left by a run that is gone (PID {holder.pid}" in caplog.text
    # Released on exit: the next run neither waits nor reports a takeover.
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        fit(out, max_steps=3)
    assert "taking over" not in caplog.text

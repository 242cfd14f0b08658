"""One training run per run directory: an exclusive lock on ``<out_dir>/LOCK`` holding PID and host.

The lock is an ``fcntl.flock`` on the file, so the kernel releases it when the holder dies however it
dies (``kill -9`` included): a lock file left by a dead run never blocks a rerun, which takes it over
and says so. The PID/host written into the file only name the holder in messages.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path

from comsl.errors import ComSLError

log = logging.getLogger(__name__)

LOCK = "LOCK"


class RunDirLockedError(ComSLError):
    """Another live process holds the run directory."""


class RunLock:
    """``with RunLock(out_dir):`` holds ``out_dir`` for this process; raises RunDirLockedError naming the
    holder when another live process has it."""

    def __init__(self, out_dir: Path | str):
        self.path = Path(out_dir) / LOCK
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(_read(fd))
            os.close(fd)
            raise RunDirLockedError(
                f"{self.path.parent}: already in use by another comsl train ({holder}, lock file {self.path}); "
                "wait for it to finish, stop it, or use another train.out_dir") from None
        previous = _read(fd)
        if previous:
            # The file outlived its holder: the kernel dropped the lock when that process died.
            log.warning("%s: taking over the lock left by a run that is gone (%s)", self.path, _describe(previous))
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                  "started": time.strftime("%Y-%m-%d %H:%M:%S")}).encode(), 0)
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        # Empty the file first so the next run does not report a takeover after a clean exit.
        os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _read(fd: int) -> dict:
    raw = os.pread(fd, 4096, 0)
    try:
        data = json.loads(raw.decode()) if raw.strip() else {}
    except (UnicodeDecodeError, ValueError):
        data = {"unreadable": raw[:80].decode(errors="replace")}
    return data if isinstance(data, dict) else {}


def _describe(holder: dict) -> str:
    if not holder:
        return "holder unknown"
    if "pid" in holder:
        return f"PID {holder['pid']} on host {holder.get('host', '?')}, started {holder.get('started', '?')}"
    return f"lock file content {holder}"

"""Run logging on rank 0: metrics.jsonl, TensorBoard events, progress bar and the loss-curve plot."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

METRICS = "metrics.jsonl"


class MetricsLogger:
    """One JSON record per logged step / evaluation in ``<out_dir>/metrics.jsonl`` and the same scalars
    in TensorBoard under ``<out_dir>/tensorboard``.

    On resume from step ``start_step`` records beyond it (written after the checkpoint by the
    interrupted run) are dropped, so the file reads as one uninterrupted run. The shortened file is
    written beside it and renamed over it: a kill at any moment leaves the old or the new history whole.
    """

    def __init__(self, out_dir: Path, *, enabled: bool, start_step: int):
        self.path = Path(out_dir) / METRICS
        self.enabled = enabled
        self.start_step = start_step
        self._writer = None
        self._file = None

    def open(self) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            lines = self.path.read_text().splitlines()
            kept = [line for line in lines if line.strip() and _step_of(line) <= self.start_step]
            if len(kept) != len(lines):
                tmp = self.path.with_name(self.path.name + ".tmp")
                tmp.write_text("".join(line + "\n" for line in kept))
                os.replace(tmp, self.path)
        self._file = self.path.open("a")
        from torch.utils.tensorboard import SummaryWriter
        self._writer = SummaryWriter(str(self.path.parent / "tensorboard"), purge_step=self.start_step + 1)

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._file.write(json.dumps(record, sort_keys=False) + "\n")
        self._file.flush()
        step = record["step"]
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                self._writer.add_scalar(key, value, step)
        self._writer.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _step_of(line: str) -> float:
    """Step of a metrics record; a line cut short by a kill mid-write counts as beyond any resume point."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All records of a metrics.jsonl."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_loss_curve(metrics_path: Path, png_path: Path) -> bool:
    """Plot every ``loss/*`` series (and dev BLEU on a second axis) against the step. Returns False
    when there is nothing to plot."""
    records = read_metrics(metrics_path) if Path(metrics_path).is_file() else []
    losses: dict[str, tuple[list[int], list[float]]] = {}
    bleu: tuple[list[int], list[float]] = ([], [])
    for r in records:
        for key, value in r.items():
            if key.startswith("loss/"):
                xs, ys = losses.setdefault(key, ([], []))
                xs.append(r["step"])
                ys.append(value)
        if "dev/bleu_avg" in r:
            bleu[0].append(r["step"])
            bleu[1].append(r["dev/bleu_avg"])
    if not losses:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for key, (xs, ys) in sorted(losses.items()):
        ax.plot(xs, ys, label=key, linewidth=2.0 if key == "loss/total" else 1.0)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if bleu[0]:
        ax2 = ax.twinx()
        h = ax2.plot(bleu[0], bleu[1], "k--o", markersize=3, label="dev BLEU")
        ax2.set_ylabel("dev BLEU")
        handles += h
        labels += ["dev BLEU"]
    ax.legend(handles, labels, loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    return True


def progress_bar(*, total: int, initial: int, enabled: bool):
    """tqdm bar over optimizer steps (rank 0 only)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc="train", unit="step",
                dynamic_ncols=True)

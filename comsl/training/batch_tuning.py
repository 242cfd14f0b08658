"""Per-bucket batch sizes filled to a memory budget by probing the real training step (``comsl tune-batches``).

In the spirit of NeMo's OOMptimizer. The training set's 2D length buckets (speech frames x target tokens,
``data.num_buckets`` x ``data.num_token_buckets``) are estimated as ``comsl train`` estimates them; for
each bucket a batch of its longest shapes (every utterance as long as the bucket's longest speech and
its longest text) runs the config's real training step (forward, backward and optimizer update, through
the config's engine and precision) at growing batch sizes, doubling and then bisecting, until the step's
peak memory passes the budget or memory runs out.

Peak memory: ``torch.cuda.max_memory_allocated`` on a GPU; on a CPU the process's peak resident set,
reset before each probe through ``/proc/self/clear_refs`` where Linux allows it (otherwise the peak of
the whole process, which can only make batches smaller). One process is probed: ZeRO's sharding over
several GPUs leaves more room than measured here.
"""

from __future__ import annotations

import ctypes
import gc
import resource
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import yaml

from comsl.data.batching import FRAME_SAMPLES, Bucket, LengthBucketSampler
from comsl.errors import ComSLError

GB = 1024**3
CUDA_BUDGET_FRACTION = 0.9
"""Default budget on a GPU: this share of its memory (the allocator's cache and fragmentation need the rest)."""
CPU_BUDGET_FRACTION = 0.5
"""Default budget on a CPU: resident memory now plus this share of the RAM still available."""
BISECT_PRECISION = 8
"""Bisection stops when the gap between a fitting and a failing size is below 1/8 of the fitting size."""


class PeakMemory:
    """Peak memory in bytes of what runs between ``reset()`` and ``peak()`` on ``device``."""

    def __init__(self, device: torch.device):
        self.device = device
        self.resettable: bool | None = None
        """Whether the CPU peak can be reset (known after the first ``reset``)."""

    def reset(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        _trim_heap()
        if self.resettable is not False:
            self.resettable = _clear_peak_rss()

    def peak(self) -> int:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device)
        if self.resettable:
            return _status_kib("VmHWM") * 1024
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss if sys.platform == "darwin" else rss * 1024

    def default_budget(self) -> int:
        if self.device.type == "cuda":
            return int(CUDA_BUDGET_FRACTION * torch.cuda.get_device_properties(self.device).total_memory)
        import psutil

        return int(psutil.Process().memory_info().rss + CPU_BUDGET_FRACTION * psutil.virtual_memory().available)


def _clear_peak_rss() -> bool:
    """Reset this process's peak resident set (Linux >= 4.0); False where that is impossible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_kib("VmHWM") > 0
    except OSError:
        return False


def _trim_heap() -> None:
    """Hand freed heap back to the system (glibc keeps it otherwise, and it would count in the next peak)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def largest_batch(try_size: Callable[[int], int | None], budget: int, limit: int) -> tuple[int, int | None]:
    """The largest batch size n <= ``limit`` whose step fits: ``try_size(n)`` returns the step's peak memory
    in bytes, or None when it ran out of memory; it fits when that peak is <= ``budget``. Sizes double
    from 1, then the gap between the last fitting and the first failing size is bisected (to 1/8 of
    the fitting size). Returns (n, its peak), or (0, the peak of one utterance, None on out-of-memory)
    when not even one utterance fits."""
    good, good_peak, n = 0, None, 1
    while True:
        peak = try_size(n)
        if peak is None or peak > budget:
            bad = n
            break
        good, good_peak = n, peak
        if n >= limit:
            return good, good_peak
        n = min(2 * n, limit)
    if good == 0:
        return 0, peak
    while bad - good > max(1, good // BISECT_PRECISION):
        mid = (good + bad) // 2
        peak = try_size(mid)
        if peak is None or peak > budget:
            bad = mid
        else:
            good, good_peak = mid, peak
    return good, good_peak


def _stretch(ids: list[int], length: int) -> list[int]:
    """``[first, ..., last]`` repeated in the middle to ``length`` tokens (a worst-case text of the bucket)."""
    body = ids[1:-1] or ids[:1]
    middle = (body * (length // len(body) + 1))[: max(length - 2, 0)]
    return ([ids[0]] + middle + [ids[-1]])[:length]


def longest_items(dataset, index: int, max_frames: int, max_tokens: int, n: int, speech: bool) -> list[dict]:
    """``n`` copies of item ``index`` stretched to a bucket's longest shapes: ``max_tokens`` tokens of
    transcript and translation, ``max_frames`` frames of noise as audio (``speech``)."""
    item = dict(dataset.text_item(index))
    item["transcript_ids"] = _stretch(item["transcript_ids"], max_tokens)
    item["translation_ids"] = _stretch(item["translation_ids"], max_tokens)
    if speech:
        rng = np.random.default_rng(0)
        item["audio"] = (0.1 * rng.standard_normal(max_frames * FRAME_SAMPLES)).astype(np.float32)
    return [item] * n


def longest_text_batch(text) -> dict | None:
    """The largest extra MT text batch (``TrainTask.mt_text``) its sampler can draw: its longest pair,
    stretched to that length, as many times as the token budget allows; None without extra text."""
    if text is None:
        return None
    lengths = text.sampler.token_lengths
    longest = int(np.argmax(lengths))
    rows = max(1, text.sampler.max_tokens // int(lengths[longest]))
    return text.collate_fn(longest_items(text.dataset, longest, 0, int(lengths[longest]), rows, False))


def _is_oom(err: BaseException) -> bool:
    text = str(err).lower()
    return isinstance(err, (MemoryError, torch.cuda.OutOfMemoryError)) or (
        isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text))


def _probe_step(engine, task, meter: PeakMemory, speech: bool) -> Callable[[Bucket, int, int], int | None]:
    """``step(bucket, index, n)``: one real training step on ``n`` copies of item ``index`` stretched to
    ``bucket``'s longest shapes (with the largest extra MT text batch when the task draws one); its peak
    memory in bytes, or None when memory ran out."""
    extra = longest_text_batch(task.mt_text)

    def step(bucket: Bucket, index: int, n: int) -> int | None:
        meter.reset()
        try:
            batch = task.collate_fn(longest_items(task.dataset, index, bucket.max_frames, bucket.max_tokens, n,
                                                  speech))
            if extra is not None:
                batch["mt_extra"] = extra
            total, _ = engine.forward(engine.prepare(batch), last_micro=True)
            engine.backward(total)
            engine.step()
            return meter.peak()
        except (MemoryError, RuntimeError) as err:
            if not _is_oom(err):
                raise
            engine.discard()
            return None

    return step


def _build(cfg):
    """The training task with freshly estimated buckets, and the engine of its real training step."""
    from comsl.training.engine import build_engine
    from comsl.training.freezing import FreezePolicy
    from comsl.training.schedule import param_groups
    from comsl.training.task import build_task

    task = build_task(cfg)
    model = task.model
    FreezePolicy.from_config(cfg.train, model).apply_static(model)
    engine = build_engine(model, task.loss_fn, param_groups(model, cfg.optim), optim=cfg.optim, train=cfg.train)
    model.train()
    return task, engine


def tune(cfg, budget_gb: float | None,
         max_batch_size: int) -> tuple[list[Bucket], list[int], int, LengthBucketSampler]:
    """Probe every estimated bucket of ``cfg``'s training set; returns the tuned buckets, each one's peak
    memory (bytes), the budget used and the sampler with the estimated buckets. Raises ComSLError when one
    utterance of a bucket does not fit the budget."""
    task, engine = _build(cfg)
    sampler = task.sampler
    meter = PeakMemory(engine.device)
    budget = int(budget_gb * GB) if budget_gb else meter.default_budget()
    speech = sampler.audio_frames is not None
    step = _probe_step(engine, task, meter, speech)
    first = [int(np.flatnonzero(sampler.item_bucket == k)[0]) for k in range(len(sampler.buckets))]
    step(sampler.buckets[0], first[0], 1)  # warm-up: the optimizer state exists from now on, as in training
    tuned, peaks = [], []
    for k, b in enumerate(sampler.buckets):
        size, peak = largest_batch(lambda n: step(b, first[k], n), budget, max_batch_size)
        if size == 0:
            need = "runs out of memory" if peak is None else f"needs {peak / GB:.2f} GiB"
            raise ComSLError(f"bucket {k} ({b.max_frames} frames, {b.max_tokens} tokens): one utterance {need}, "
                             f"over the budget of {budget / GB:.2f} GiB; raise --memory-budget, or shorten the "
                             "longest utterances (model.max_speech_seconds) or set model.activation_checkpointing")
        tuned.append(Bucket(b.max_frames, b.max_tokens, size))
        peaks.append(peak)
    return tuned, peaks, budget, sampler


def write_config(source: Path, overrides: list[str], buckets: list[Bucket], target: Path) -> None:
    """``source`` with ``overrides`` applied and ``data.buckets`` set, as YAML at ``target``."""
    from comsl.config import load_config, merge, parse_overrides

    data = yaml.safe_load(source.read_text()) or {}
    if overrides:
        data = merge(data, parse_overrides(overrides))
    data["data"] = dict(data.get("data") or {})
    data["data"]["buckets"] = [b._asdict() for b in buckets]
    target.write_text(yaml.safe_dump(data, sort_keys=False, default_flow_style=None, allow_unicode=True))
    load_config(target)  # what `comsl train` will read


def padding_before_after(estimated: LengthBucketSampler, tuned: list[Bucket],
                         seed: int) -> dict[str, tuple[float, float]]:
    """Padded/real frames and tokens over epoch 0: estimated buckets filled to the caps, then tuned buckets."""
    audio = None if estimated.audio_frames is None else estimated.audio_frames * FRAME_SAMPLES
    after = LengthBucketSampler(estimated.token_lengths, audio, buckets=tuned, seed=seed).padding_ratios(0)
    before = estimated.padding_ratios(0)
    return {name: (before[name], after[name]) for name in after}

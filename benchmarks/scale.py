"""Memory and data-loading throughput at corpus scale: is every process's memory flat, and does the
loader keep ahead of the model?

Standalone: ``python benchmarks/scale.py [--quick] [--steps N]``. Builds (once, under the git-ignored
``exp/scale/``) a few hundred real audio clips (synthetic tones and noise written by soundfile, wav and
mp3) and a manifest of 100,000 rows pointing at them, then runs comsl's own training data path
(``SpeechDataset`` with its default, uncached decoding, ``LengthBucketSampler``, ``Collator`` with the
Whisper log-mel front end) in DataLoader worker processes, feeding a tiny ComSL model for ``--steps``
optimizer steps (2,000; ``--quick``: 300). A thread samples the resident memory (``/proc/PID/status``
VmRSS) of the main process and of every worker.

Last line: ``rss_growth=X loader_vs_model=Y``. ``rss_growth``: the largest growth of any process after
warm-up (the first 10% of the steps), as a fraction of its RSS at the end of warm-up. ``loader_vs_model``:
batches per second the loader delivers on its own (timed first, no model) over batches per second the
model step consumes (forward + backward + AdamW, timed without waiting for data); above 1 the loader
keeps ahead.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from comsl.config import ModelConfig, ObjectiveConfig
from comsl.data.batching import Collator, LengthBucketSampler
from comsl.data.dataset import SpeechDataset
from comsl.data.features import build_frontend
from comsl.data.manifest import write_manifest
from comsl.data.tokenizer import train_tokenizer
from comsl.models.build import TINY_SPEECH_ARCH, TINY_TEXT_ARCH, build_model
from comsl.objectives.multitask import ComSLMultiTaskLoss

WORDS = "le chat dort sur un tapis rouge près de la grande fenêtre ouverte ce matin".split()
LANGS = ("fr", "de", "es", "it")


def make_clips(clip_dir: Path, n: int, seed: int = 0) -> list[tuple[str, int]]:
    """``n`` clips of 1-6 s (a tone plus noise, 16 or 48 kHz; every 4th an mp3): (path, samples at 16 kHz)."""
    clip_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    clips = []
    for i in range(n):
        sr = 48000 if i % 2 else 16000
        seconds = float(rng.uniform(1.0, 6.0))
        path = clip_dir / f"c{i}.{'mp3' if i % 4 == 3 else 'wav'}"
        if not path.is_file():
            t = np.arange(int(seconds * sr)) / sr
            wave = 0.2 * np.sin(2 * np.pi * rng.uniform(100, 3000) * t) + 0.02 * rng.standard_normal(t.shape)
            sf.write(path, wave.astype(np.float32), sr)
        # absolute: the manifest reader resolves relative paths against the manifest's directory
        clips.append((str(path.resolve()), int(sf.info(path).frames * 16000 // sr)))
    return clips


def make_manifest(out: Path, clips: list[tuple[str, int]], rows: int, seed: int = 0) -> Path:
    """A manifest of ``rows`` utterances cycling over ``clips``, with short synthetic texts."""
    rng = np.random.default_rng(seed)
    entries = []
    for i in range(rows):
        path, n = clips[i % len(clips)]
        words = " ".join(rng.choice(WORDS, size=int(rng.integers(3, 12))))
        entries.append({"id": f"u{i}", "audio": path, "n_samples": n, "duration": f"{n / 16000:.3f}",
                        "src_lang": LANGS[i % len(LANGS)], "tgt_lang": "en", "transcript": words,
                        "translation": words})
    manifest = out / "train.tsv"
    write_manifest(str(manifest), entries)
    return manifest


def rss_kb(pid: int) -> int | None:
    """Resident memory of ``pid`` in KiB (None when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (the DataLoader workers), from /proc."""
    kids = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids += [int(k) for k in f.read().split()]
        except OSError:
            pass
    return kids


class RssSampler(threading.Thread):
    """Samples the RSS of this process and its children every ``interval`` s: ``samples[pid]`` is a list
    of (step, KiB); ``step`` is read from ``self.step`` (set by the training loop)."""

    def __init__(self, interval: float = 0.5):
        super().__init__(daemon=True)
        self.interval = interval
        self.step = 0
        self.samples: dict[int, list[tuple[int, int]]] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        me = os.getpid()
        while not self._halt.is_set():
            for pid in [me, *children(me)]:
                kb = rss_kb(pid)
                if kb is not None:
                    self.samples.setdefault(pid, []).append((self.step, kb))
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def growth(samples: list[tuple[int, int]], warmup: int) -> tuple[int, int, float] | None:
    """(RSS at the end of warm-up, largest RSS after it, growth fraction) of one process."""
    base = [kb for step, kb in samples if step <= warmup]
    after = [kb for step, kb in samples if step > warmup]
    if not base or not after:
        return None
    return base[-1], max(after), max(after) / base[-1] - 1.0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="300 steps instead of 2,000")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (overrides --quick)")
    p.add_argument("--rows", type=int, default=100_000, help="manifest rows")
    p.add_argument("--clips", type=int, default=300, help="distinct audio clips")
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    p.add_argument("--out", default="exp/scale", help="where the clips, manifest and tokenizer go")
    a = p.parse_args(argv)
    steps = a.steps or (300 if a.quick else 2000)
    torch.manual_seed(0)
    out = Path(a.out)
    t0 = time.time()
    manifest = make_manifest(out, make_clips(out / "clips", a.clips), a.rows)
    tokenizer = train_tokenizer(WORDS * 20, out / "tokenizer", vocab_size=120)
    dataset = SpeechDataset.from_manifest(str(manifest), tokenizer)
    sampler = LengthBucketSampler(dataset.token_lengths(), dataset.audio_lengths(), max_frames=3000,
                                  max_tokens=1024, seed=0)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=Collator(tokenizer.pad_token_id,
                        build_frontend("whisper_log_mel")), num_workers=a.workers,
                        persistent_workers=a.workers > 0, prefetch_factor=4 if a.workers else None)
    print(f"corpus: {a.rows} rows over {a.clips} clips, {len(sampler)} batches per epoch "
          f"(set-up {time.time() - t0:.1f} s)", flush=True)
    rss = RssSampler()
    rss.start()

    # 1. the loader alone: how fast it delivers batches
    n_alone = max(20, steps // 5)
    it = iter(loader)
    next(it)  # workers started
    start = time.perf_counter()
    for _ in range(n_alone):
        next(it)
    loader_rate = n_alone / (time.perf_counter() - start)

    # 2. training: the model step timed on its own
    model = build_model(ModelConfig(speech_arch=dict(TINY_SPEECH_ARCH["whisper"]), text_arch=dict(TINY_TEXT_ARCH)),
                        tokenizer).train()
    loss_fn = ComSLMultiTaskLoss(ObjectiveConfig(w_asr=0.0, w_st=1.0, w_mt=0.0, w_cml=0.0, lambda_st=0.0,
                                                 lambda_mt=0.0), mask_token_id=None,
                                 eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model_seconds = 0.0
    epoch = 0
    for step in range(1, steps + 1):
        try:
            batch = next(it)
        except StopIteration:
            epoch += 1
            sampler.set_epoch(epoch)
            it = iter(loader)
            batch = next(it)
        start = time.perf_counter()
        loss, _ = loss_fn(model, batch)  # the ST objective, as comsl train computes it
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        model_seconds += time.perf_counter() - start
        rss.step = step
        if step % max(1, steps // 10) == 0:
            print(f"step {step}: loss {loss.item():.3f}, main RSS {rss_kb(os.getpid()) / 1024:.0f} MiB", flush=True)
    rss.stop()
    model_rate = steps / model_seconds

    warmup = steps // 10
    worst = 0.0
    print(f"{'process':>12} {'rss_warm_MiB':>13} {'rss_max_MiB':>12} {'growth':>7}")
    for pid, samples in rss.samples.items():
        g = growth(samples, warmup)
        if g is None:
            continue
        name = "main" if pid == os.getpid() else f"worker {pid}"
        print(f"{name:>12} {g[0] / 1024:13.0f} {g[1] / 1024:12.0f} {g[2]:7.3f}")
        worst = max(worst, g[2])
    print(f"loader alone: {loader_rate:.1f} batches/s; model step: {model_rate:.1f} batches/s; "
          f"{steps} steps, {time.time() - t0:.0f} s in all")
    print(f"rss_growth={worst:.3f} loader_vs_model={loader_rate / model_rate:.2f}")


if __name__ == "__main__":
    main()

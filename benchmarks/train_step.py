"""Training-step throughput and peak memory: variable-length bucketed batches vs padding to 11 s / 30 s.

``python benchmarks/train_step.py [--quick] [--shape small|paper]``. Same model (benchmark composite of
the chosen shape, see common.SHAPES; random init), same full ComSL loss (ASR + ST/DDM + MT/reg with a frozen teacher
+ CML), same AdamW step, same utterances (CoVoST-like lengths, mean ~5 s, max 11 s; random log-mel):

* ``ours``   comsl.data.batching.LengthBucketSampler batches (frame budget = 8 x 11 s), each padded to
             its longest utterance, with padding masks;
* ``pad11_b1`` the paper's reference code literally: batch size 1, every utterance padded to 11 s
             (1100 frames), no masks (all ones);
* ``pad11``  the stronger baseline: the same padding in batches of 8 (random order);
* ``pad30``  transformers' WhisperEncoder style: every utterance padded to 30 s (3000 frames) through
             our encoder with its full 1500 positions and an all-ones mask (same maths as transformers'
             ``WhisperEncoder.forward``, which insists on 3000 frames).

Steps are interleaved (always advancing the contender with the least time so far); wall time and this
process's CPU time are both reported, and the summary ratios use CPU time, which other jobs on a shared
machine disturb far less than wall time. Peak memory: each
contender's largest batch runs in a fresh subprocess; reported is the peak resident set during one
training step above the resident set before it (Linux VmHWM after resetting it), i.e. activations,
gradients and temporaries of the step. Last line: ``train_speedup_vs_pad11=X
train_speedup_vs_pad11_b1=X train_speedup_vs_pad30=X`` (CPU-time ratios; wall-time ratios are printed
above it).
"""

from __future__ import annotations

import argparse
import copy
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (PASSES, SHAPES, bench_model, breakdown, comsl_loss, covost_like, interleaved,  # noqa: E402
                    make_batch, peak_rss_probe, shape_kwargs)

from comsl.data.batching import FRAME_SAMPLES, LengthBucketSampler  # noqa: E402
from comsl.training.engine import to_device  # noqa: E402
from comsl.training.master_weights import MasterWeights  # noqa: E402
from comsl.training.precision import autocast, resolve_precision  # noqa: E402

BATCH = 8
PAD_FRAMES = {"pad11_b1": 1100, "pad11": 1100, "pad30": 3000}
BATCH_SIZE = {"pad11_b1": 1, "pad11": BATCH, "pad30": BATCH}
CONTENDERS = ("ours", "pad11_b1", "pad11", "pad30")


def batches_of(name: str, corpus, seed: int = 0) -> list[list[int]]:
    """Index batches of one contender over the whole corpus (every utterance exactly once)."""
    n = len(corpus.seconds)
    if name == "ours":
        sampler = LengthBucketSampler(corpus.translation_len, corpus.frames * FRAME_SAMPLES,
                                      max_tokens=10**9, max_frames=BATCH * 1100, seed=seed)
        return sampler.epoch_batches(0)
    order = np.random.default_rng(seed).permutation(n).tolist()
    size = BATCH_SIZE[name]
    return [order[i:i + size] for i in range(0, n, size)]


class Trainer:
    """One contender: its own copy of the model, loss (with teacher) and optimizer; ``precision`` fp32 or
    bf16, trained as ``train.precision: bf16`` trains in the torch engine: bf16 weights (and teacher) with
    float32 masters that AdamW updates (``comsl.training.master_weights``), float inputs cast to bf16, the
    forward under autocast; fused AdamW, as the engine's. A step is ``forward`` -> ``backward`` -> ``update``."""

    def __init__(self, model, precision: str = "fp32", objectives=None):
        self.model = copy.deepcopy(model).train()
        self.loss = comsl_loss(self.model, objectives)
        self.precision = precision
        groups = [{"params": [p for p in self.model.parameters() if p.requires_grad]}]
        self.masters: MasterWeights | None = None
        if precision == "bf16":
            self.masters = MasterWeights(self.model, groups, torch.bfloat16)
            groups = self.masters.param_groups
            self.loss.to(torch.bfloat16)
        self.opt = torch.optim.AdamW(groups, lr=1e-4, fused=True)  # as the engine's

    def forward(self, batch: dict):
        if self.masters is not None:
            batch = to_device(batch, torch.device("cpu"), torch.bfloat16)
        with autocast(torch.device("cpu"), self.precision):
            return self.loss(self.model, batch)

    def backward(self, total: torch.Tensor) -> None:
        total.backward()
        if self.masters is not None:
            self.masters.collect_grads()

    def update(self) -> None:
        self.opt.step()
        if self.masters is not None:
            self.masters.push()
        self.opt.zero_grad(set_to_none=True)

    def step(self, batch: dict) -> float:
        total, _ = self.forward(batch)
        self.backward(total)
        self.update()
        return float(total.detach())


def probe_memory(name: str, n: int, shape: str, precision: str) -> None:
    """Subprocess entry: peak RSS of one step on ``name``'s largest batch; prints ``peak_mib=X``."""
    corpus = covost_like(n)
    kwargs = shape_kwargs(shape)
    vocab = kwargs["vocab"]
    batches = batches_of(name, corpus)
    frames = lambda b: len(b) * (PAD_FRAMES.get(name) or corpus.frames[b].max())  # noqa: E731
    largest = max(batches, key=frames)
    trainer = Trainer(bench_model(**kwargs), precision)
    batch = make_batch(corpus, largest, vocab, pad_frames=PAD_FRAMES.get(name))
    trainer.step(batch)  # optimizer state and allocator warm-up belong to the baseline
    print(f"peak_mib={peak_rss_probe(lambda: trainer.step(batch), repeats=1):.0f} batch={len(largest)}")


def profile(shape: str, n: int, repeats: int, precision: str) -> None:
    """Per-pass CPU seconds of training on the same 8 utterances: ours (padded to their longest, masks),
    pad11 (one batch padded to 11 s) and pad11_b1 (8 steps of one utterance padded to 11 s); best of
    ``repeats``."""
    corpus = covost_like(n)
    kwargs = shape_kwargs(shape)
    idx = batches_of("pad11", corpus)[0]
    work = {"ours": [make_batch(corpus, idx, kwargs["vocab"])],
            "pad11": [make_batch(corpus, idx, kwargs["vocab"], pad_frames=1100)],
            "pad11_b1": [make_batch(corpus, [i], kwargs["vocab"], pad_frames=1100) for i in idx]}
    base = bench_model(**kwargs)
    trainers = {name: Trainer(base, precision) for name in work}
    rows: dict[str, dict[str, float]] = {}
    for name, trainer in trainers.items():
        trainer.step(work[name][-1])  # warm-up
    for _ in range(repeats):
        for name, trainer in trainers.items():
            row = breakdown(trainer, work[name])
            rows[name] = {k: min(v, rows.get(name, row)[k]) for k, v in row.items()}
    print(f"profile, shape {shape}, {precision}: one training step on 8 utterances ({int(corpus.frames[idx].sum())} real "
          f"frames; ours pads to {work['ours'][0]['speech'].shape[-1]}), CPU seconds, best of {repeats}")
    print(f"  {'part':28s} " + " ".join(f"{name:>9s}" for name in work) + "  pad11/ours  pad11_b1/ours")
    for label in ["step", "forward"] + [lbl for _, lbl in PASSES] + ["backward", "optimizer"]:
        r = {name: rows[name][label] for name in work}
        ratios = [f"{r[ref] / r['ours']:10.2f}" if r["ours"] else f"{'-':>10s}" for ref in ("pad11", "pad11_b1")]
        print(f"  {label:28s} " + " ".join(f"{v:9.2f}" for v in r.values()) + "  " + "  ".join(ratios))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="16 utterances instead of 128")
    p.add_argument("--utterances", type=int, default=0, help="override the number of utterances")
    p.add_argument("--shape", choices=sorted(SHAPES), default="paper",
                   help="benchmark model shape (common.SHAPES): small, or ComSL Medium's proportions")
    p.add_argument("--probe", choices=CONTENDERS, help=argparse.SUPPRESS)
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--precision", choices=["fp32", "bf16", "auto"], default="auto",
                   help="precision of every contender (auto: bf16 where the CPU has bf16 units, as training)")
    p.add_argument("--profile", type=int, default=0, metavar="REPEATS",
                   help="only print a per-pass CPU-time profile of ours / pad11 / pad11_b1 on 8 utterances")
    args = p.parse_args(argv)
    n = args.utterances or (16 if args.quick else 128)
    if args.probe:
        probe_memory(args.probe, n, args.shape, resolve_precision(args.precision, torch.device("cpu")))
        return {}
    if args.profile:
        profile(args.shape, n, args.profile, resolve_precision(args.precision, torch.device("cpu")))
        return {}

    corpus = covost_like(n)
    kwargs = shape_kwargs(args.shape)
    vocab = kwargs["vocab"]
    base = bench_model(**kwargs)
    precision = resolve_precision(args.precision, torch.device("cpu"))
    trainers = {name: Trainer(base, precision) for name in CONTENDERS}
    work = {}
    for name in CONTENDERS:
        pad = PAD_FRAMES.get(name)
        work[name] = [make_batch(corpus, b, vocab, pad_frames=pad, seed=k)
                      for k, b in enumerate(batches_of(name, corpus))]
        warm = make_batch(corpus, list(range(2)), vocab, pad_frames=pad)
        trainers[name].step(warm)  # first-call overheads outside the timing
    cpu: dict[str, float] = {}
    times = interleaved(work, lambda name, batch: trainers[name].step(batch), cpu)

    audio = corpus.seconds.sum()
    print(f"{n} utterances ({audio:.0f} s of speech, mean {corpus.seconds.mean():.1f} s, max "
          f"{corpus.seconds.max():.1f} s), full ComSL loss, {precision}, shape {args.shape} {kwargs}, "
          f"torch threads {torch.get_num_threads()}")
    memory = {}
    if not args.no_memory:
        for name in CONTENDERS:
            out = subprocess.run([sys.executable, __file__, "--probe", name, "--utterances", str(n),
                                  "--shape", args.shape, "--precision", precision],
                                 capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            memory[name] = out
    print(f"{'contender':10s} {'batches':>8s} {'padded frames':>14s} {'wall s':>8s} {'utt/s':>8s} {'cpu s':>8s}"
          f" {'utt/cpu-s':>10s}  peak step memory")
    for name in CONTENDERS:
        padded = sum(b["speech"].shape[0] * b["speech"].shape[-1] for b in work[name])
        print(f"{name:10s} {len(work[name]):8d} {padded:14d} {times[name]:8.1f} {n / times[name]:8.2f} "
              f"{cpu[name]:8.1f} {n / cpu[name]:10.2f}  {memory.get(name, '-')}")
    refs = ("pad11", "pad11_b1", "pad30")
    for ref in refs:
        print(f"wall-time speedup vs {ref}: {times[ref] / times['ours']:.2f}")
    result = {f"train_speedup_vs_{ref}": cpu[ref] / cpu["ours"] for ref in refs}
    print(" ".join(f"{k}={v:.2f}" for k, v in result.items()))
    return result


if __name__ == "__main__":
    main()

"""Efficiency of a full ComSL training step against this machine's limit: model FLOP/s vs matmul FLOP/s.

``python benchmarks/efficiency.py [--quick] [--shape paper|small]``. In one run:

* the machine's dense matmul FLOP/s in fp32 and bf16 (2048^3, best of several; the reference peak);
* the same full ComSL training steps (paper weights, frozen teacher, AdamW; length-bucketed CoVoST-like
  batches, random log-mel) on the benchmark composite of the chosen shape, in fp32 and in bf16
  (bf16 weights with float32 masters, forward under autocast, as ``train.precision: bf16`` trains in the
  torch engine: ``train_step.Trainer``), interleaved;
* model FLOPs of every step counted from the shapes (``flops.comsl_step_flops``: 6 x matmul
  parameters x real positions per trained pass, 2x for passes without gradient, plus attention).

Achieved model FLOP/s = counted FLOPs / wall seconds of the steps; MFU = achieved / matmul FLOP/s of the
same precision. Last line: ``bf16_speedup=X mfu_bf16=Y mfu_fp32=Z`` (bf16_speedup: fp32 / bf16 process
CPU time of the same steps; the wall-time ratio is printed too).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHAPES, bench_model, covost_like, interleaved, make_batch, shape_kwargs  # noqa: E402
from flops import comsl_step_flops, matmul_flops_per_s  # noqa: E402
from train_step import Trainer, batches_of  # noqa: E402

from comsl.training.precision import cpu_has_bf16  # noqa: E402


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="12 utterances (8 at medium_width) and 3 matmul repeats instead of 48 (16) and 10")
    p.add_argument("--utterances", type=int, default=0, help="override the number of utterances")
    p.add_argument("--shape", choices=sorted(SHAPES), default="paper",
                   help="benchmark model shape (common.SHAPES): small, or ComSL Medium's proportions")
    args = p.parse_args(argv)
    if not cpu_has_bf16():
        print("this CPU has no bf16 matrix units: bf16 figures are for emulated bf16")
    kwargs = shape_kwargs(args.shape)
    wide = kwargs.get("d_text", 256) > 256  # ComSL Medium's width: ~16x the FLOPs per token
    n = args.utterances or ((8 if args.quick else 16) if wide else (12 if args.quick else 48))
    repeats = 3 if args.quick else 10
    peak = {"fp32": matmul_flops_per_s(torch.float32, repeats=repeats),
            "bf16": matmul_flops_per_s(torch.bfloat16, repeats=repeats)}

    corpus = covost_like(n, seed=4)
    base = bench_model(**kwargs)
    batches = [make_batch(corpus, b, kwargs["vocab"], seed=k) for k, b in enumerate(batches_of("ours", corpus, seed=4))]
    flops = sum(comsl_step_flops(base, b)["total"] for b in batches)
    trainers = {name: Trainer(base, precision=name) for name in ("fp32", "bf16")}
    first = {name: t.step(batches[0]) for name, t in trainers.items()}  # warm-up, outside the timing
    cpu: dict[str, float] = {}
    wall = interleaved({name: batches for name in trainers}, lambda name, b: trainers[name].step(b), cpu)

    padded = sum(b["speech"].shape[0] * b["speech"].shape[-1] for b in batches)
    real = int(sum(b["speech_mask"].sum() for b in batches))
    print(f"{n} utterances in {len(batches)} length-bucketed batches (padded/real frames {padded / real:.2f}), "
          f"shape {args.shape} {kwargs}, torch threads {torch.get_num_threads()}")
    print(f"first-step loss fp32 {first['fp32']:.4f} bf16 {first['bf16']:.4f}")
    print(f"model FLOPs of the {len(batches)} steps: {flops / 1e12:.3f} TFLOP")
    mfu = {}
    for name in trainers:
        achieved = flops / wall[name]
        mfu[name] = achieved / peak[name]
        print(f"{name}: matmul {peak[name] / 1e9:8.1f} GFLOP/s   step wall {wall[name]:7.1f} s  cpu {cpu[name]:7.1f} s   "
              f"model {achieved / 1e9:7.1f} GFLOP/s   MFU {100 * mfu[name]:5.1f}%")
    print(f"wall-time ratio fp32 / bf16: {wall['fp32'] / wall['bf16']:.2f}")
    result = {"bf16_speedup": cpu["fp32"] / cpu["bf16"], "mfu_bf16": mfu["bf16"], "mfu_fp32": mfu["fp32"]}
    print(" ".join(f"{k}={v:.3f}" if k.startswith("mfu") else f"{k}={v:.2f}" for k, v in result.items()))
    return result


if __name__ == "__main__":
    main()

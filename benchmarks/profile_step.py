"""Where a full ComSL training step spends its time outside the large matmuls (torch.profiler).

``python benchmarks/profile_step.py [--shape paper|small] [--precision fp32|bf16|auto] [--steps N]``.
Profiles ``--steps`` training steps (after one warm-up) of the benchmark composite with the full ComSL
loss and frozen teacher on a length-bucketed batch, and prints (1) the share of self CPU time in
matmul-like kernels (mm/addmm/bmm/linear/conv/attention) against everything else, and (2) the top
operators by self CPU time. Last line: ``matmul_share=X``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHAPES, bench_model, covost_like, make_batch, shape_kwargs  # noqa: E402
from train_step import Trainer, batches_of  # noqa: E402

from comsl.training.precision import resolve_precision  # noqa: E402

MATMUL = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::linear", "aten::matmul",
          "aten::convolution", "aten::_convolution", "aten::mkldnn_convolution", "aten::convolution_backward",
          "aten::_scaled_dot_product_flash_attention_for_cpu",
          "aten::_scaled_dot_product_flash_attention_for_cpu_backward", "mkldnn::_linear_pointwise")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="paper")
    p.add_argument("--precision", choices=["fp32", "bf16", "auto"], default="auto")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--utterances", type=int, default=8)
    p.add_argument("--top", type=int, default=30)
    args = p.parse_args(argv)
    precision = resolve_precision(args.precision, torch.device("cpu"))
    kwargs = shape_kwargs(args.shape)
    corpus = covost_like(args.utterances, seed=5)
    batch = make_batch(corpus, batches_of("ours", corpus, seed=5)[0], kwargs["vocab"])
    trainer = Trainer(bench_model(**kwargs), precision)
    trainer.step(batch)  # warm-up: AdamW state, oneDNN kernel choice
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            trainer.step(batch)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    mat = sum(e.self_cpu_time_total for e in events if e.key in MATMUL)
    print(f"shape {args.shape}, {precision}, batch {tuple(batch['speech'].shape)}, {args.steps} steps, "
          f"self CPU {total / 1e6:.2f} s: matmul-like {100 * mat / total:.1f}%, other {100 * (total - mat) / total:.1f}%")
    print(f"{'operator':56s} {'self CPU s':>10s} {'share':>6s} {'calls':>7s}")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:args.top]:
        print(f"{e.key[:56]:56s} {e.self_cpu_time_total / 1e6:10.3f} {100 * e.self_cpu_time_total / total:5.1f}% "
              f"{e.count:7d}{'  (matmul)' if e.key in MATMUL else ''}")
    print(f"matmul_share={mat / total:.3f}")
    return {"matmul_share": mat / total}


if __name__ == "__main__":
    main()

"""Multi-task overhead: a full ComSL training step vs an ST-only step on the same batches.

``python benchmarks/multitask.py [--quick] [--shape small|paper]``. Same benchmark composite (shape from
common.SHAPES), same length-bucketed batches
(CoVoST-like lengths), same AdamW step. Full ComSL = ASR 0.35 + ST 0.35 (DDM, λ=0.8) + MT 0.2
(regularised by a frozen teacher, λ=0.2) + CML 0.1 (MTP, STM src/tgt, ERM); ST-only = plain speech
translation cross-entropy (w_st=1, λ_st=0, every other weight 0). Steps are interleaved. A cProfile
breakdown of one step of each on the largest batch is printed (where the extra cost comes from).
Last line: ``multitask_overhead=X`` (full / ST-only, process CPU time; the wall-time ratio is printed too).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (PASSES, SHAPES, bench_model, breakdown, covost_like, interleaved, make_batch,  # noqa: E402
                    shape_kwargs)
from train_step import Trainer, batches_of  # noqa: E402

from comsl.config import ObjectiveConfig  # noqa: E402
from comsl.training.precision import resolve_precision  # noqa: E402

ST_ONLY = ObjectiveConfig(w_asr=0.0, w_st=1.0, w_mt=0.0, w_cml=0.0, lambda_st=0.0, lambda_mt=0.0)

def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="16 utterances and a best-of-1 profile instead of 96 and 2")
    p.add_argument("--utterances", type=int, default=0, help="override the number of utterances")
    p.add_argument("--shape", choices=sorted(SHAPES), default="paper",
                   help="benchmark model shape (common.SHAPES): small, or ComSL Medium's proportions")
    p.add_argument("--precision", choices=["fp32", "bf16", "auto"], default="auto",
                   help="precision of both contenders (auto: bf16 where the CPU has bf16 units, as training)")
    args = p.parse_args(argv)
    n = args.utterances or (16 if args.quick else 96)
    precision = resolve_precision(args.precision, torch.device("cpu"))
    corpus = covost_like(n, seed=2)
    base = bench_model(**shape_kwargs(args.shape))
    vocab = base.config.text_config.vocab_size
    batches = [make_batch(corpus, b, vocab, seed=k) for k, b in enumerate(batches_of("ours", corpus, seed=2))]
    trainers = {"full": Trainer(base, precision), "st_only": Trainer(base, precision, ST_ONLY)}

    def step(name, batch):
        trainers[name].step(batch)

    for name in trainers:
        step(name, batches[0])  # warm-up
    cpu: dict[str, float] = {}
    times = interleaved({"full": batches, "st_only": batches}, step, cpu)
    print(f"{n} utterances in {len(batches)} length-bucketed batches, {precision}, shape {args.shape} "
          f"{shape_kwargs(args.shape)}, torch threads {torch.get_num_threads()}")
    for name in ("full", "st_only"):
        print(f"{name:8s} wall {times[name]:8.1f} s  {n / times[name]:6.2f} utt/s   cpu {cpu[name]:8.1f} s")
    print(f"wall-time ratio full / st_only: {times['full'] / times['st_only']:.2f}")

    mid = max(batches, key=lambda b: b["speech"].numel())
    best_of = 1 if args.quick else 2
    print(f"one step on the largest batch, best of {best_of}, CPU seconds (forward parts by cProfile, cumulative):")
    rows = {}
    for name in ("full", "st_only"):
        for _ in range(best_of):
            row = breakdown(trainers[name], [mid])
            rows[name] = {k: min(v, rows.get(name, row)[k]) for k, v in row.items()}
    for label in ["step", "forward"] + [lbl for _, lbl in PASSES] + ["backward", "optimizer"]:
        f, s = rows["full"][label], rows["st_only"][label]
        print(f"  {label:28s} full {f:7.2f}  st_only {s:7.2f}  ratio {f / s if s else float('inf'):5.2f}")
    overhead = cpu["full"] / cpu["st_only"]
    print(f"multitask_overhead={overhead:.2f}")
    return {"multitask_overhead": overhead}


if __name__ == "__main__":
    main()

"""`comsl tune-batches CONFIG [key.path=value ...]`: per-bucket batch sizes filled to a memory budget.

Estimates the training set's 2D length buckets, probes growing batches of each bucket's longest shapes
with the config's real training step (``comsl.training.batch_tuning``) and writes the sizes into
``data.buckets`` of a copy of the config (or of the config itself, ``--in-place``); a following
``comsl train`` on that file uses them. Prints each bucket's size and peak memory, and the padded/real
ratios of speech frames and tokens.
"""

from __future__ import annotations

from pathlib import Path

from comsl.errors import ConfigError


def register(sub) -> None:
    p = sub.add_parser(
        "tune-batches", help="fill each length bucket's batch size to a memory budget (writes data.buckets)",
        description="Estimate the training set's length buckets, probe growing batches of each bucket's longest "
                    "shapes with the config's real training step until the memory budget or an out-of-memory "
                    "error, and write the per-bucket batch sizes into data.buckets of a copy of the config "
                    "(YAML comments are not kept).")
    p.add_argument("config", help="experiment YAML (see configs/)")
    p.add_argument("overrides", nargs="*", metavar="key.path=value", help="dotted overrides, as for `comsl train`")
    p.add_argument("--memory-budget", type=float, default=None, metavar="GB",
                   help="peak memory one training step may use, in GiB (default: most of the GPU's memory; on a CPU "
                        "the resident memory now plus part of the available RAM, see comsl.training.batch_tuning)")
    p.add_argument("--max-batch-size", type=int, default=512, help="largest batch size tried (default 512)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--out", default=None, help="where to write the tuned config (default: CONFIG with "
                                                   "suffix .tuned.yaml next to it)")
    where.add_argument("--in-place", action="store_true", help="rewrite CONFIG itself")
    p.set_defaults(func=run)


def run(args) -> int:
    from comsl.config import load_config
    from comsl.training.batch_tuning import GB, padding_before_after, tune, write_config

    if args.max_batch_size < 1:
        raise ConfigError(f"--max-batch-size: must be >= 1, got {args.max_batch_size}")
    if args.memory_budget is not None and args.memory_budget <= 0:
        raise ConfigError(f"--memory-budget: must be > 0 GiB, got {args.memory_budget}")
    source = Path(args.config)
    cfg = load_config(source, [*args.overrides, "data.buckets=[]"])
    tuned, peaks, budget, estimated = tune(cfg, args.memory_budget, args.max_batch_size)
    print(f"comsl tune-batches: budget {budget / GB:.2f} GiB per step")
    print(f"{'bucket':>6} {'max_frames':>10} {'max_tokens':>10} {'batch_size':>10} {'peak_GiB':>9}")
    for k, (b, peak) in enumerate(zip(tuned, peaks)):
        print(f"{k:>6} {b.max_frames:>10} {b.max_tokens:>10} {b.batch_size:>10} {peak / GB:>9.3f}")
    ratios = padding_before_after(estimated, tuned, cfg.train.seed)
    print("padded/real over an epoch (buckets filled to the caps -> tuned): "
          + ", ".join(f"{name} {a:.3f} -> {b:.3f}" for name, (a, b) in ratios.items()))
    target = source if args.in_place else Path(args.out or source.with_suffix(".tuned.yaml"))
    write_config(source, args.overrides, tuned, target)
    print(f"comsl tune-batches: wrote {len(tuned)} buckets to data.buckets of {target}; `comsl train {target}` "
          "uses them")
    return 0

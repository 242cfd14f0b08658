"""Run every benchmark and print one summary line.

``python benchmarks/run_all.py [--quick] [--shape both|paper|small]``. Each benchmark runs in its own
process (its output is shown as it comes); the last line of each is ``key=value ...``. The training-step
and multi-task benchmarks run once per model shape (common.SHAPES; default both): the ``paper`` shape's
values carry the plain keys, the ``small`` shape's the same keys with ``_small`` appended. The last line
printed here is ``train_speedup_vs_pad11=X train_speedup_vs_pad11_b1=X train_speedup_vs_pad30=X
multitask_overhead=X decode_speedup=X decode_speedup_bf16=X features_speedup=X bf16_speedup=X mfu_bf16=X``
followed by ``bf16_speedup_medium_width`` and ``mfu_bf16_medium_width`` (efficiency at ComSL Medium's
real width, d 1024 and a 250k vocabulary, at truncated depth) and the ``_small`` variants. Exits non-zero
if a benchmark fails (e.g. decoding outputs differ from transformers' generate).

``--quick`` is sized to finish within 15 minutes on a quiet 2-core machine: every benchmark runs its
quick size (fewer utterances/repeats, the same contenders), efficiency runs at the paper shape only and
the small shape's training-step run skips its peak-memory subprocesses (the slowest part of a run).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ["features", "decoding", "efficiency", "multitask", "train_step", "model_sizes"]
SHAPED = {"multitask", "train_step"}  # benchmarks that take --shape
SUMMARY = ["train_speedup_vs_pad11", "train_speedup_vs_pad11_b1", "train_speedup_vs_pad30", "multitask_overhead",
           "decode_speedup", "decode_speedup_bf16", "features_speedup", "bf16_speedup", "mfu_bf16"]
WIDTH_KEYS = ["bf16_speedup", "mfu_bf16"]  # efficiency at ComSL Medium's width (common.SHAPES["medium_width"])
SHAPED_KEYS = ["train_speedup_vs_pad11", "train_speedup_vs_pad11_b1", "train_speedup_vs_pad30",
               "multitask_overhead"]


def run(name: str, quick: bool, shape: str | None = None, extra: tuple[str, ...] = ()) -> dict[str, str]:
    cmd = [sys.executable, str(HERE / f"{name}.py")] + (["--quick"] if quick else [])
    cmd += (["--shape", shape] if shape else []) + list(extra)
    print(f"=== {name}: {' '.join(cmd[1:])}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    last = ""
    for line in proc.stdout:
        print("  " + line.rstrip(), flush=True)
        if line.strip():
            last = line.strip()
    if proc.wait() != 0:
        raise SystemExit(f"benchmark {name} failed (exit {proc.returncode}); run {' '.join(cmd)} to see why")
    print(f"=== {name}: {time.perf_counter() - t0:.0f} s", flush=True)
    return dict(kv.split("=", 1) for kv in last.split() if "=" in kv)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    t0 = time.perf_counter()
    p.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
    p.add_argument("--only", nargs="*", choices=BENCHMARKS, help="run only these")
    p.add_argument("--shape", choices=["both", "paper", "small"], default="both",
                   help="model shape(s) for the training-step and multi-task benchmarks")
    args = p.parse_args()
    shapes = ["paper", "small"] if args.shape == "both" else [args.shape]
    values: dict[str, str] = {}
    for name in args.only or BENCHMARKS:
        if name == "efficiency":  # the paper shape, then ComSL Medium's real width at truncated depth
            values.update(run(name, args.quick))
            values.update({k + "_medium_width": v for k, v in run(name, args.quick, "medium_width").items()})
            continue
        if name not in SHAPED:
            values.update(run(name, args.quick))
            continue
        for shape in shapes:
            suffix = "" if shape == "paper" else "_small"
            extra = ("--no-memory",) if args.quick and name == "train_step" and shape == "small" else ()
            values.update({k + suffix: v for k, v in run(name, args.quick, shape, extra).items()})
    keys = SUMMARY + [k + "_medium_width" for k in WIDTH_KEYS] + [k + "_small" for k in SHAPED_KEYS]
    print(f"=== all: {time.perf_counter() - t0:.0f} s", flush=True)
    print(" ".join(f"{k}={values[k]}" for k in keys if k in values))


if __name__ == "__main__":
    main()

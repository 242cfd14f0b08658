"""Throughput of comsl's batched Whisper log-mel against transformers' WhisperFeatureExtractor.

Standalone: ``python benchmarks/features.py [--quick]``. Utterances are 2-11 s of noise (CoVoST-like
lengths). Both sides get the same waveforms; comsl gets them as padded (B, S) batches. The extractor
is timed as it is normally called (per batch, padding every utterance to 30 s) and, for reference,
with ``padding="longest"``. The three are run interleaved (repeat by repeat) and each reports its best
wall time and best CPU time of this process. By default torch uses one thread, as the extractor (numpy)
does, so both get one core and CPU time measures the work done, which other jobs on a shared machine
disturb far less than wall time. Last line: ``features_speedup=X.X`` (comsl vs the default extractor
call, CPU time; the wall-time ratio is printed above it).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from transformers import WhisperFeatureExtractor

from comsl.data.features import WhisperLogMel


def _best_of_interleaved(fns: dict, repeats: int) -> tuple[dict[str, float], dict[str, float]]:
    """Best wall and best CPU seconds of each function, calling them in turn ``repeats`` times."""
    wall = {name: float("inf") for name in fns}
    cpu = dict(wall)
    for _ in range(repeats):
        for name, fn in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[name] = min(wall[name], time.perf_counter() - t0)
            cpu[name] = min(cpu[name], time.process_time() - c0)
    return wall, cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer utterances and repeats")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1, like the numpy extractor; 0 = leave as is)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    n_utts, repeats = (64, 2) if args.quick else (256, 3)
    rng = np.random.default_rng(0)
    lengths = rng.integers(2 * 16000, 11 * 16000, size=n_utts)
    # Sorted like a length-bucketed sampler would batch them.
    waves = [rng.standard_normal(int(n)).astype(np.float32) * 0.1 for n in sorted(lengths)]
    batches = [waves[i : i + args.batch_size] for i in range(0, n_utts, args.batch_size)]
    audio_s = float(sum(lengths)) / 16000

    ours = WhisperLogMel(80)
    padded = []
    for b in batches:
        x = torch.zeros(len(b), max(map(len, b)))
        for i, w in enumerate(b):
            x[i, : len(w)] = torch.from_numpy(w)
        padded.append((x, torch.tensor([len(w) for w in b])))
    extractor = WhisperFeatureExtractor(feature_size=80)

    def run_ours():
        with torch.inference_mode():
            for x, n in padded:
                ours(x, n)

    def run_hf(padding):
        for b in batches:
            extractor(b, sampling_rate=16000, return_tensors="np", **padding)

    run_ours()  # warm-up
    fns = {"comsl WhisperLogMel (batched, real length)": run_ours,
           "WhisperFeatureExtractor (default, pads to 30 s)": lambda: run_hf({}),
           "WhisperFeatureExtractor (padding='longest')": lambda: run_hf({"padding": "longest"})}
    wall, cpu = _best_of_interleaved(fns, repeats)
    ours_name, hf_name, longest_name = fns
    print(f"{n_utts} utterances, {audio_s:.0f} s audio, batch {args.batch_size}, torch threads {torch.get_num_threads()}")
    for name in fns:
        print(f"{name:50s} wall {wall[name] * 1000:8.1f} ms  {audio_s / wall[name]:8.0f} s audio/s   "
              f"cpu {cpu[name] * 1000:8.1f} ms  {audio_s / cpu[name]:8.0f} s audio/cpu-s")
    print(f"wall-time ratio vs default: {wall[hf_name] / wall[ours_name]:.1f}")
    print(f"ratio vs padding='longest': wall {wall[longest_name] / wall[ours_name]:.1f}  "
          f"cpu {cpu[longest_name] / cpu[ours_name]:.1f}")
    print(f"features_speedup={cpu[hf_name] / cpu[ours_name]:.1f}")


if __name__ == "__main__":
    main()

"""Throughput of comsl's batched Whisper log-mel against transformers' WhisperFeatureExtractor.

Standalone: ``python benchmarks/features.py [--quick]``. Utterances are 2-11 s of noise (CoVoST-like
lengths). Both sides get the same waveforms; comsl gets them as padded (B, S) batches. The extractor
is timed as it is normally called (per batch, padding every utterance to 30 s) and, for reference,
with ``padding="longest"``. Last line: ``features_speedup=X.X`` (comsl vs the default extractor call).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from transformers import WhisperFeatureExtractor

from comsl.data.features import WhisperLogMel


def _best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer utterances and repeats")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave as is)")
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
    t_ours = _best_of(run_ours, repeats)
    t_hf = _best_of(lambda: run_hf({}), repeats)
    t_hf_longest = _best_of(lambda: run_hf({"padding": "longest"}), repeats)
    print(f"{n_utts} utterances, {audio_s:.0f} s audio, batch {args.batch_size}, torch threads {torch.get_num_threads()}")
    for name, t in [("comsl WhisperLogMel (batched, real length)", t_ours),
                    ("WhisperFeatureExtractor (default, pads to 30 s)", t_hf),
                    ("WhisperFeatureExtractor (padding='longest')", t_hf_longest)]:
        print(f"{name:50s} {t * 1000:8.1f} ms  {audio_s / t:8.0f} s audio/s")
    print(f"ratio vs padding='longest': {t_hf_longest / t_ours:.1f}")
    print(f"features_speedup={t_hf / t_ours:.1f}")


if __name__ == "__main__":
    main()

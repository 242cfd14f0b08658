"""A GPU check for the day one is lent (<= 5 minutes on one GPU): the real training path at ComSL
Medium's widths.

``python benchmarks/gpu_check.py [--speech-layers N] [--text-layers N] [--steps N]``; smoke test on a
CPU: ``python benchmarks/gpu_check.py --cpu --tiny``.

What runs is the package's own trainer (``comsl.training.Trainer``) with ``train.engine: deepspeed``,
ZeRO-2, ``train.precision: bf16`` and the full ComSL loss with a frozen MT teacher, on a model with
Medium's real widths (Whisper-medium encoder d1024 / 16 heads, mBART-50 d1024 / 16 heads / ffn 4096 /
vocabulary 250,054; depth truncated to 6 speech and 3+3 text layers by default, so a ZeRO-2 checkpoint
(~14 bytes a parameter) stays ~6 GB; ``--speech-layers 24 --text-layers 12`` is Medium's full depth)
over synthetic CoVoST-like batches (random log-mel, random ids). It trains ``--steps`` steps straight,
then again with a checkpoint half-way, stopping there and resuming in a new trainer (same process),
and compares the two runs' losses; dev-set generation (beam 4 on held-out synthetic utterances, under
the trainer's evaluation path) runs at the end of each run. ``--tiny`` swaps in d64 widths, 2+1+1
layers and a 1000-word vocabulary.

Prints the device, peak memory (GPU: ``torch.cuda.max_memory_allocated``; CPU: peak resident set), the
median step time, model FLOP/s (``flops.comsl_step_flops``, counted from the shapes) and the largest
relative loss difference between the resumed and the straight run (0 on a CPU; a GPU's
non-deterministic kernels may leave ~1e-3); last line ``key=value ...``. Exits non-zero on any failure
or a difference above 1e-2.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu", action="store_true", help="run on the CPU even where a GPU is visible")
    p.add_argument("--tiny", action="store_true", help="tiny widths (smoke test); default: Medium's widths")
    p.add_argument("--speech-layers", type=int, default=None, help="speech encoder depth (default 6; Medium: 24)")
    p.add_argument("--text-layers", type=int, default=None, help="text encoder and decoder depth (default 3; Medium: 12)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps in all (default 6; tiny 4)")
    p.add_argument("--batch", type=int, default=None, help="utterances per batch (default 8; tiny 2)")
    p.add_argument("--seconds", type=float, default=None, help="utterance length in seconds (default 8; tiny 1)")
    p.add_argument("--out", default=None, help="run directory (default: a temporary one)")
    return p.parse_args(argv)


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None and ARGS.cpu:
    os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch is imported

import torch  # noqa: E402
from transformers import MBartConfig, WhisperConfig  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import EOS, PAD, SPEECH_TOKEN_IDS, comsl_loss, covost_like, make_batch  # noqa: E402
from flops import comsl_step_flops  # noqa: E402

from comsl.config import OptimConfig, TrainConfig  # noqa: E402
from comsl.models.composite import ComSLConfig, ComSLModel  # noqa: E402
from comsl.training.task import TrainTask  # noqa: E402
from comsl.training.trainer import Trainer  # noqa: E402

MEDIUM = dict(d_speech=1024, heads_speech=16, speech_layers=24, d_text=1024, heads_text=16, text_layers=12,
              ffn_text=4096, vocab=250_054)
TRUNCATED = dict(speech_layers=6, text_layers=3)  # default depth on a GPU (see the module docstring)
TINY = dict(d_speech=64, heads_speech=2, speech_layers=2, d_text=64, heads_text=2, text_layers=1,
            ffn_text=256, vocab=1000)


def build(shape: dict, seed: int = 0) -> ComSLModel:
    torch.manual_seed(seed)
    speech = WhisperConfig(d_model=shape["d_speech"], encoder_layers=shape["speech_layers"],
                           encoder_attention_heads=shape["heads_speech"], encoder_ffn_dim=4 * shape["d_speech"],
                           decoder_layers=1, decoder_attention_heads=shape["heads_speech"],
                           decoder_ffn_dim=4 * shape["d_speech"], num_mel_bins=80, max_source_positions=1500,
                           vocab_size=64, **SPEECH_TOKEN_IDS)
    text = MBartConfig(vocab_size=shape["vocab"], d_model=shape["d_text"], encoder_layers=shape["text_layers"],
                       decoder_layers=shape["text_layers"], encoder_attention_heads=shape["heads_text"],
                       decoder_attention_heads=shape["heads_text"], encoder_ffn_dim=shape["ffn_text"],
                       decoder_ffn_dim=shape["ffn_text"], max_position_embeddings=1024, pad_token_id=PAD,
                       bos_token_id=0, eos_token_id=EOS, decoder_start_token_id=EOS, scale_embedding=True)
    return ComSLModel(ComSLConfig(speech_config=speech, text_config=text, max_speech_seconds=30.0))


class Batches:
    """A fixed list of synthetic batches: dataset of batch indices, identity collate, epoch-free sampler."""

    def __init__(self, batches: list[dict]):
        self.batches = batches

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, i):
        return self.batches[i]

    def __iter__(self):
        return iter([[i] for i in range(len(self.batches))])

    def set_epoch(self, epoch: int) -> None:
        pass


def synthetic_batches(n_batches: int, batch: int, seconds: float, vocab: int, seed: int) -> list[dict]:
    corpus = covost_like(n_batches * batch, seed=seed)
    corpus.seconds[:] = seconds
    corpus.transcript_len[:] = int(seconds * 3) + 2
    corpus.translation_len[:] = int(seconds * 2.7) + 2
    return [make_batch(corpus, list(range(k * batch, (k + 1) * batch)), vocab, seed=seed + k)
            for k in range(n_batches)]


def make_task(model: ComSLModel, train_batches: list[dict], dev: list[dict], timings: dict) -> TrainTask:
    def evaluate(m):
        t0 = time.perf_counter()
        n = 0
        for b in dev:
            dev_ = next(m.parameters()).device
            out = m.generate_speech(b["speech"].to(dev_), b["speech_mask"].to(dev_), b["src_lang_ids"].to(dev_),
                                    tgt_lang_id=5, num_beams=4, max_new_tokens=16)
            n += int((out != PAD).sum())
        timings.setdefault("generate_s", []).append(time.perf_counter() - t0)
        return {"bleu": {"xx": 0.0}, "avg": 0.0, "extra": {"dev/generated_tokens": n}}

    data = Batches(train_batches)
    return TrainTask(model=model, loss_fn=comsl_loss(model), dataset=data, sampler=data,
                     collate_fn=lambda items: items[0], evaluate_fn=evaluate)


class TimedTrainer(Trainer):
    """The package's trainer, timing every optimizer step (synchronised on a GPU)."""

    step_times: list[float]

    def _one_step(self, micro):
        sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
        sync()
        t0 = time.perf_counter()
        out = super()._one_step(micro)
        sync()
        self.step_times = getattr(self, "step_times", []) + [time.perf_counter() - t0]
        return out


def run(out: Path, shape: dict, batches, dev, steps: int, stop_after: int, timings: dict):
    """One ``fit`` call; returns (its FitResult, its step times, parameter count). The trainer is freed."""
    model = build(shape)
    train = TrainConfig(out_dir=str(out), max_steps=steps, stop_after=stop_after, engine="deepspeed",
                        zero_stage=2, precision="bf16", save_every=max(steps // 2, 1), eval_every=0,
                        log_every=1, freeze_speech_fraction=0.0, keep_last=1)
    optim = OptimConfig(lr=1e-4, warmup_steps=1)
    trainer = TimedTrainer(make_task(model, batches, dev, timings), train, optim)
    result = trainer.fit()
    out_ = (result, getattr(trainer, "step_times", []), sum(p.numel() for p in model.parameters()))
    del trainer, model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out_


def peak_memory_gib() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def main(args: argparse.Namespace) -> dict:
    shape = dict(TINY) if args.tiny else {**MEDIUM, **TRUNCATED}
    shape["speech_layers"] = args.speech_layers or shape["speech_layers"]
    shape["text_layers"] = args.text_layers or shape["text_layers"]
    steps = args.steps or (4 if args.tiny else 6)
    batch, seconds = args.batch or (2 if args.tiny else 8), args.seconds or (1.0 if args.tiny else 8.0)
    batches = synthetic_batches(steps, batch, seconds, shape["vocab"], seed=0)
    dev = synthetic_batches(1, batch, seconds, shape["vocab"], seed=100)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    print(f"device {device}; shape {shape}; {steps} steps of {batch} x {seconds:g} s; ZeRO-2, bf16, full ComSL + teacher",
          flush=True)
    timings: dict = {}
    from comsl.training.logging import read_metrics

    def losses(d: Path) -> list[float]:
        return [r["loss/total"] for r in read_metrics(d / "metrics.jsonl") if r.get("loss/total") is not None]

    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out) if args.out else Path(tmp)
        res_a, step_times, params = run(root / "straight", shape, batches, dev, steps, 0, timings)
        peak = peak_memory_gib()  # one training run's peak (the later runs reuse the freed memory)
        ckpt_mib = sum(f.stat().st_size for f in (root / "straight" / "checkpoints").rglob("*") if f.is_file()) / 2**20
        la = losses(root / "straight")
        shutil.rmtree(root / "straight")  # disk: a Medium-width ZeRO-2 checkpoint is several GB
        half = steps // 2
        run(root / "resumed", shape, batches, dev, steps, half, timings)
        res_b, _, _ = run(root / "resumed", shape, batches, dev, steps, 0, timings)
        lb = losses(root / "resumed")
    assert res_a.finished and res_b.finished and res_b.resumed_from == half, (res_a, res_b)
    assert len(la) == len(lb) == steps, (la, lb)
    diff = max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(la, lb))
    times = sorted(step_times[1:] or step_times)  # the first step carries one-off costs
    step_s = times[len(times) // 2]
    with torch.device("meta"):
        meta = build(shape)  # shapes only, for the FLOP count
    flops = sum(comsl_step_flops(meta, b)["total"] for b in batches) / len(batches)
    result = {"params_b": params / 1e9, "peak_mem_gib": peak, "step_s": step_s,
              "model_tflops": flops / step_s / 1e12, "generate_s": max(timings.get("generate_s", [0.0])),
              "resume_rel_diff": diff, "checkpoint_mib": ckpt_mib, "total_s": time.perf_counter() - t_start}
    print(f"losses straight {la}\nlosses resumed  {lb}")
    print(f"{params / 1e9:.3f}B parameters; peak memory {peak:.1f} GiB; median step {step_s:.3f} s; "
          f"model {result['model_tflops']:.3f} TFLOP/s; dev generation {result['generate_s']:.2f} s; "
          f"checkpoint {ckpt_mib:.0f} MiB; resumed vs straight losses: max rel diff {diff:.2e}")
    print(" ".join(f"{k}={v:.4g}" for k, v in result.items()))
    return result


if __name__ == "__main__":
    r = main(ARGS)
    sys.exit(0 if r["resume_rel_diff"] <= 1e-2 else 1)

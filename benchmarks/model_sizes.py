"""ComSL Medium / Large at paper shapes: parameter counts and (extrapolated) training-step time on CPU.

``python benchmarks/model_sizes.py [--quick]``.

* Parameter counts are exact, from models built on the meta device (no memory): Whisper medium encoder
  (24 layers, d 1024) or large (32 layers, d 1280) + length adapter + mBART-50 (12+12 layers, d 1024,
  vocabulary 250,054). The paper reports about 0.9B (Medium) and 1.3B (Large).
* A full-depth training step does not fit this machine: fp32 weights + gradients + AdamW state + the
  frozen MT teacher are ~18.5 GB (Medium) / ~26 GB (Large) before activations, on a 24 GiB machine shared
  with other jobs. So the step (full ComSL loss, AdamW) runs on a *truncated-depth* model with the real
  widths and vocabulary (2 speech layers, 1+1 text layers), forward hooks time each layer, and the full
  depth is extrapolated as: measured step + (missing layers) x (that layer's forward time) x 3 for trained
  layers (forward + ~2x backward) or x 1 for the teacher's (forward only). This is an estimate; it
  assumes layers of one stack cost the same, which holds for transformers at fixed length.
Last line: ``medium_params=X large_params=Y`` (billions).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from transformers import MBartConfig, WhisperConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import comsl_loss, covost_like, make_batch  # noqa: E402

from comsl.models.composite import ComSLConfig, ComSLModel  # noqa: E402

SIZES = {  # name -> (whisper layers, whisper d_model, heads)
    "medium": (24, 1024, 16),
    "large": (32, 1280, 20),
}
TEXT_LAYERS, TEXT_D, TEXT_VOCAB = 12, 1024, 250054


def config(size: str, speech_layers: int | None = None, text_layers: int | None = None) -> ComSLConfig:
    layers, d, heads = SIZES[size]
    speech = WhisperConfig(d_model=d, encoder_layers=speech_layers or layers, encoder_attention_heads=heads,
                           encoder_ffn_dim=4 * d, decoder_layers=1, decoder_attention_heads=heads,
                           decoder_ffn_dim=4 * d, num_mel_bins=80, max_source_positions=1500)
    tl = text_layers or TEXT_LAYERS
    text = MBartConfig(vocab_size=TEXT_VOCAB, d_model=TEXT_D, encoder_layers=tl, decoder_layers=tl,
                       encoder_attention_heads=16, decoder_attention_heads=16, encoder_ffn_dim=4096,
                       decoder_ffn_dim=4096, max_position_embeddings=1024, pad_token_id=1, bos_token_id=0,
                       eos_token_id=2, decoder_start_token_id=2, scale_embedding=True)
    return ComSLConfig(speech_config=speech, text_config=text, max_speech_seconds=11.0)


def count_params(size: str) -> dict[str, int]:
    with torch.device("meta"):
        model = ComSLModel(config(size))
    parts: dict[str, int] = {}
    seen = set()
    for name, p in model.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        parts[model.part_of(name)] = parts.get(model.part_of(name), 0) + p.numel()
    parts["total"] = sum(parts.values())
    return parts


class LayerTimer:
    """Forward time per layer stack (speech / text encoder / text decoder), split trained vs teacher."""

    def __init__(self, model, teacher):
        self.times: dict[tuple[str, str], list[float]] = {}
        for owner, m in (("student", model), ("teacher", teacher)):
            if m is None:
                continue
            stacks = {"speech": m.speech_encoder.encoder.layers, "text_enc": m.text_model.model.encoder.layers,
                      "text_dec": m.text_model.model.decoder.layers}
            for stack, layers in stacks.items():
                layer = layers[0]  # every layer of a stack does the same work; time the first
                key = (owner, stack)
                self.times[key] = []
                layer.register_forward_pre_hook(lambda *_, k=key: self.times[k].append(-time.perf_counter()))
                layer.register_forward_hook(lambda *_, k=key: self.times[k].__setitem__(
                    -1, self.times[k][-1] + time.perf_counter()))

    def reset(self):
        for v in self.times.values():
            v.clear()

    def per_layer(self) -> dict[tuple[str, str], float]:
        return {k: sum(v) for k, v in self.times.items()}


def step_estimate(size: str, seconds: float, batch: int) -> tuple[float, float]:
    """(measured truncated step s, extrapolated full-depth step s) for ``batch`` utterances of ``seconds``."""
    torch.manual_seed(0)
    model = ComSLModel(config(size, speech_layers=2, text_layers=1)).train()
    loss = comsl_loss(model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    corpus = covost_like(batch, seed=3)
    corpus.seconds[:] = seconds
    corpus.transcript_len[:] = int(seconds * 3) + 2
    corpus.translation_len[:] = int(seconds * 2.7) + 2
    b = make_batch(corpus, list(range(batch)), TEXT_VOCAB)
    timer = LayerTimer(model, loss.teacher)

    def step():
        opt.zero_grad(set_to_none=True)
        total, _ = loss(model, b)
        total.backward()
        opt.step()

    step()  # AdamW state allocation and first-call costs
    timer.reset()
    t0 = time.perf_counter()
    step()
    measured = time.perf_counter() - t0
    full_layers = {"speech": SIZES[size][0], "text_enc": TEXT_LAYERS, "text_dec": TEXT_LAYERS}
    have = {"speech": 2, "text_enc": 1, "text_dec": 1}
    extra = 0.0
    for (owner, stack), t in timer.per_layer().items():
        extra += (full_layers[stack] - have[stack]) * t * (3 if owner == "student" else 1)
    del model, loss, opt
    return measured, measured + extra


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="Medium only, batch 2 of 5 s utterances")
    args = p.parse_args(argv)
    result = {}
    for size in SIZES:
        parts = count_params(size)
        result[f"{size}_params"] = parts["total"] / 1e9
        print(f"ComSL {size:6s} {parts['total'] / 1e9:6.3f}B parameters  (" + ", ".join(
            f"{k} {v / 1e6:.0f}M" for k, v in parts.items() if k != "total") + ")")
    print("full-depth step skipped: weights+grads+AdamW+teacher need ~18.5 GB (Medium) / ~26 GB (Large) in fp32 "
          "on a shared 24 GiB machine; truncated depth (2 speech, 1+1 text layers) measured, full depth extrapolated")
    cases = [("medium", 5.0, 2)] if args.quick else [("medium", s, b) for b in (2, 4) for s in (5.0, 10.0)]
    if not args.quick:
        cases += [("large", s, 2) for s in (5.0, 10.0)]
    print(f"{'size':7s} {'speech s':>8s} {'batch':>5s} {'truncated step s':>17s} {'full-depth estimate s':>22s}")
    for size, seconds, batch in cases:
        measured, full = step_estimate(size, seconds, batch)
        print(f"{size:7s} {seconds:8.1f} {batch:5d} {measured:17.1f} {full:22.1f}", flush=True)
    print(" ".join(f"{k}={v:.3f}" for k, v in result.items()))
    return result


if __name__ == "__main__":
    main()

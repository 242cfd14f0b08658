"""Shared pieces of the benchmarks: the benchmark model, a CoVoST-like synthetic corpus, batches, timing.

Model shapes (``SHAPES``), all with 64-dimensional heads and ffn 4 x d_model, d_model 256 unless said:

* ``small``: Whisper encoder 4 layers, mBART 3+3 layers, vocabulary 8192 (text-heavy: the speech
  encoder is only ~40% of the forward);
* ``paper``: ComSL Medium's proportions at a quarter of its width so it trains on 2 CPU cores. Medium
  is Whisper-medium's encoder (24 layers, d1024) + mBART-50 (12+12 layers, d1024, vocabulary 250k):
  the speech encoder has twice the text encoder's depth and the vocabulary is ~244 x d_model. Here:
  speech 12 layers, text 6+6 layers, vocabulary 62,500 (= 250k x 256 / 1024);
* ``medium_width``: ComSL Medium's real width (d 1024, 16 heads, ffn 4096, vocabulary 250,000) at a
  truncated depth (speech 4, text 2+2 layers) that fits this machine: the efficiency benchmark's second
  shape, where matmuls are large enough for the matrix units.

Weights are random; features are random log-mel frames (no audio decoding), so only the shapes matter.
"""

from __future__ import annotations

import copy
import cProfile
import pstats
import time
from dataclasses import dataclass

import numpy as np
import torch
from transformers import MBartConfig, WhisperConfig

from comsl.config import ObjectiveConfig
from comsl.models.composite import ComSLConfig, ComSLModel
from comsl.objectives.multitask import ComSLMultiTaskLoss

BOS, PAD, EOS = 0, 1, 2
SPEECH_TOKEN_IDS = dict(pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS, decoder_start_token_id=BOS)
"""Token ids inside the speech config's 64-entry vocabulary (Whisper's own defaults lie outside it, and
transformers warns about them); the composite never runs the Whisper decoder they belong to."""
LANG_IDS = list(range(4, 56))  # language-code tokens
FIRST_WORD = 60
N_MELS = 80


# benchmark model shapes (see the module docstring): keyword arguments of bench_model
SHAPES = {
    "small": dict(vocab=8192, speech_layers=4, text_layers=3),
    "paper": dict(vocab=62_500, speech_layers=12, text_layers=6),
    "medium_width": dict(vocab=250_000, speech_layers=4, text_layers=2, d_speech=1024, d_text=1024),
}


def shape_kwargs(shape: str) -> dict:
    """``bench_model`` keyword arguments of a named shape (``small`` or ``paper``)."""
    if shape not in SHAPES:
        raise ValueError(f"unknown benchmark shape {shape!r}; choose one of {sorted(SHAPES)}")
    return dict(SHAPES[shape])


def bench_model(*, vocab: int = 8192, d_speech: int = 256, speech_layers: int = 4, d_text: int = 256,
                text_layers: int = 3, max_speech_seconds: float = 30.0, seed: int = 0) -> ComSLModel:
    """The benchmark composite (random init); ``text_layers`` is the depth of both text encoder and
    decoder. ``max_speech_seconds=30`` gives Whisper its full 1500 positions, so one model serves every
    contender (ours slices the positional table to the batch)."""
    torch.manual_seed(seed)
    speech = WhisperConfig(d_model=d_speech, encoder_layers=speech_layers, encoder_attention_heads=d_speech // 64,
                           encoder_ffn_dim=4 * d_speech, decoder_layers=1, decoder_attention_heads=d_speech // 64,
                           decoder_ffn_dim=4 * d_speech, num_mel_bins=N_MELS,
                           max_source_positions=int(max_speech_seconds * 50), vocab_size=64,
                           **SPEECH_TOKEN_IDS)
    text = MBartConfig(vocab_size=vocab, d_model=d_text, encoder_layers=text_layers, decoder_layers=text_layers,
                       encoder_attention_heads=d_text // 64, decoder_attention_heads=d_text // 64,
                       encoder_ffn_dim=4 * d_text, decoder_ffn_dim=4 * d_text, max_position_embeddings=1024,
                       pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS, decoder_start_token_id=EOS,
                       scale_embedding=True)
    cfg = ComSLConfig(speech_config=speech, text_config=text, max_speech_seconds=max_speech_seconds)
    return ComSLModel(cfg)


def comsl_loss(model: ComSLModel, objectives: ObjectiveConfig | None = None) -> ComSLMultiTaskLoss:
    """The full ComSL loss (paper weights) with a frozen copy of ``model`` as the MT teacher."""
    cfg = objectives or ObjectiveConfig()
    teacher = copy.deepcopy(model) if cfg.w_mt > 0 and cfg.lambda_mt > 0 else None
    return ComSLMultiTaskLoss(cfg, mask_token_id=model.config.text_config.vocab_size - 1, eos_token_id=EOS,
                              pad_token_id=PAD, teacher=teacher)


@dataclass
class Corpus:
    """Synthetic utterances: durations (s) and token lengths of transcript / translation."""

    seconds: np.ndarray
    transcript_len: np.ndarray
    translation_len: np.ndarray

    @property
    def frames(self) -> np.ndarray:
        """Log-mel frames (10 ms) per utterance."""
        return np.round(self.seconds * 100).astype(np.int64)


def covost_like(n: int, seed: int = 0, max_seconds: float = 11.0) -> Corpus:
    """CoVoST-2-like lengths: lognormal durations, mean ~5 s, clipped to [1, 11] s; about 3 subword
    tokens per second of speech in both texts (+ language code and </s>)."""
    rng = np.random.default_rng(seed)
    sigma = 0.45
    seconds = np.clip(rng.lognormal(np.log(5.0) - sigma**2 / 2, sigma, n), 1.0, max_seconds)
    tr = np.maximum(2, np.round(seconds * 3.0 + rng.normal(0, 2, n))).astype(np.int64) + 2
    tl = np.maximum(2, np.round(seconds * 2.7 + rng.normal(0, 2, n))).astype(np.int64) + 2
    return Corpus(seconds, tr, tl)


def make_batch(corpus: Corpus, idx: list[int], vocab: int, *, pad_frames: int | None = None,
               seed: int = 0) -> dict:
    """The collator's batch dict for utterances ``idx`` with random log-mel features.

    ``pad_frames=None``: padded to the longest utterance, with a real mask (ours). Otherwise every
    utterance is padded to ``pad_frames`` and the mask is all ones (the reference code has no masks).
    """
    g = torch.Generator().manual_seed(seed)
    frames = corpus.frames[idx]
    width = int(frames.max()) if pad_frames is None else pad_frames
    speech = torch.randn(len(idx), N_MELS, width, generator=g)
    if pad_frames is None:
        mask = (torch.arange(width)[None, :] < torch.as_tensor(frames)[:, None]).long()
        speech = speech * mask[:, None, :]
    else:
        mask = torch.ones(len(idx), width, dtype=torch.long)
    langs = torch.as_tensor([LANG_IDS[(i * 7) % 20] for i in idx])

    def text(lengths, first):
        ids = torch.full((len(idx), int(lengths.max())), PAD, dtype=torch.long)
        m = torch.zeros_like(ids)
        for r, n in enumerate(lengths):
            ids[r, 0] = first[r]
            ids[r, 1:n - 1] = torch.randint(FIRST_WORD, vocab - 1, (int(n) - 2,), generator=g)
            ids[r, n - 1] = EOS
            m[r, :n] = 1
        return ids, m

    tr_ids, tr_mask = text(corpus.transcript_len[idx], langs)
    tg_ids, tg_mask = text(corpus.translation_len[idx], torch.full((len(idx),), 5))
    return {"ids": [str(i) for i in idx], "speech": speech, "speech_mask": mask, "src_lang_ids": langs,
            "transcript_ids": tr_ids, "transcript_mask": tr_mask,
            "translation_ids": tg_ids, "translation_mask": tg_mask}


def interleaved(contenders: dict[str, list], run, cpu: dict[str, float] | None = None) -> dict[str, float]:
    """Run every contender's work items, always advancing the one with the least time spent so far, so
    the machine's load falls on all of them alike. ``run(name, item)``; returns wall seconds per contender
    and, when ``cpu`` is given, fills it with this process's CPU seconds per contender (less sensitive to
    other jobs on a shared machine than wall time)."""
    spent = {name: 0.0 for name in contenders}
    pos = {name: 0 for name in contenders}
    if cpu is not None:
        cpu.update({name: 0.0 for name in contenders})
    while True:
        left = [n for n in contenders if pos[n] < len(contenders[n])]
        if not left:
            return spent
        name = min(left, key=lambda n: spent[n])
        t0, c0 = time.perf_counter(), time.process_time()
        run(name, contenders[name][pos[name]])
        spent[name] += time.perf_counter() - t0
        if cpu is not None:
            cpu[name] += time.process_time() - c0
        pos[name] += 1


def peak_rss_probe(step, repeats: int = 2) -> float:
    """Peak resident memory (MiB) that ``step()`` adds above the process's current resident set:
    Linux's VmHWM after resetting it (``/proc/self/clear_refs`` = 5), minus VmRSS before."""
    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"{key} not in /proc/self/status")

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = status("VmRSS")
    for _ in range(repeats):
        step()
    return status("VmHWM") - base


# forward functions whose cumulative time ``breakdown`` reports; the frozen teacher's calls are included
PASSES = [("encode_speech", "speech encoder + adapter"), ("encode_embeds", "text encoder passes"),
          ("decode_hidden", "decoder passes"), ("head_cross_entropies", "LM head + cross-entropy")]


def breakdown(trainer, batches: list[dict]) -> dict[str, float]:
    """CPU seconds of ``trainer``'s (train_step.Trainer) steps on ``batches`` (summed): forward and its parts
    (cProfile on the process CPU clock), backward, optimizer."""
    out = dict.fromkeys(["forward"] + [label for _, label in PASSES] + ["backward", "optimizer", "step"], 0.0)
    for batch in batches:
        prof = cProfile.Profile(time.process_time)
        t0 = time.process_time()
        total, _ = prof.runcall(trainer.forward, batch)
        t1 = time.process_time()
        trainer.backward(total)
        t2 = time.process_time()
        trainer.update()
        t3 = time.process_time()
        stats = pstats.Stats(prof).stats
        out["forward"] += t1 - t0
        for name, label in PASSES:
            out[label] += sum(v[3] for (file, _, func), v in stats.items() if func == name and "comsl" in file)
        out["backward"] += t2 - t1
        out["optimizer"] += t3 - t2
        out["step"] += t3 - t0
    return out

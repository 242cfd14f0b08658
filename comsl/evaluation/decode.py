"""Batched, deterministic beam decoding of a manifest split or of audio files with a ComSL model.

Utterances are sorted by duration (longest first, ties by position) and packed into batches whose
padded audio (batch size x longest utterance) stays under ``batch_seconds``; hypotheses come back in
the input order. The model is in eval mode and beam search does no sampling, so the same checkpoint,
data and settings give the same hypotheses. ASR batches hold one language each (the forced first
token is the source-language code, one per ``generate`` call); ST batches mix languages.

Under ``torch.distributed`` (e.g. dev BLEU inside a multi-rank training run) every rank decodes its own
share of the batches and all get every hypothesis. The ranks decode in lock-step (:class:`LockStep`):
ZeRO-3 gathers each module's parameters inside its forward, so a rank that has run out of batches, or
whose sentences finished first, keeps running the same forwards on a stand-in until all agree to stop.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from comsl.data.audio import SAMPLING_RATE
from comsl.data.batching import FRAMES_PER_SECOND, longest_first_batches
from comsl.errors import CheckpointError, ComSLError, DataError
from comsl.languages import TARGET_CODE, normalize_lang, parse_langs

log = logging.getLogger(__name__)

TASKS = ("st", "asr")


@dataclass(kw_only=True)
class DecodeConfig:
    """How to decode; the defaults are the paper's (beam 5)."""

    task: str = "st"
    """``st``: translate to English (forced ``en_XX``); ``asr``: transcribe (forced source code)."""
    beam: int = 5
    """Beam size (paper: 5)."""
    max_new_tokens: int = 200
    """Longest output in tokens, after the forced language code."""
    length_penalty: float = 1.0
    """Beam-search length penalty exponent (1.0: scores divided by length)."""
    batch_seconds: float = 120.0
    """Cap on padded audio per batch: batch size x longest utterance, in seconds."""
    max_batch_size: int = 64
    """Cap on utterances per batch."""
    device: str | None = None
    """torch device; None: a loaded checkpoint goes to CUDA when available, else CPU; a model handed
    to ``Decoder`` stays where it is."""
    max_failure_rate: float = 0.01
    """Fraction of utterances whose audio may fail to decode (they get an empty hypothesis) before the run stops."""

    def validate(self) -> None:
        """Raise ComSLError listing every invalid field."""
        errors = []
        if self.task not in TASKS:
            errors.append(f"task: expected one of {', '.join(TASKS)}, got {self.task!r}")
        if self.beam < 1:
            errors.append(f"beam: must be >= 1, got {self.beam}")
        if self.max_new_tokens < 1:
            errors.append(f"max_new_tokens: must be >= 1, got {self.max_new_tokens}")
        if self.batch_seconds <= 0:
            errors.append(f"batch_seconds: must be > 0, got {self.batch_seconds}")
        if self.max_batch_size < 1:
            errors.append(f"max_batch_size: must be >= 1, got {self.max_batch_size}")
        if errors:
            raise ComSLError("invalid decoding settings: " + "; ".join(errors))


@dataclass
class Utterance:
    """One input to decode, with its references when known."""

    id: str
    """Utterance id (manifest ``id`` or the file path)."""
    audio: str
    """Audio file path (any format soundfile reads, any sample rate)."""
    src_lang: str
    """CoVoST code of the spoken language."""
    duration: float
    """Seconds (used for batching only)."""
    transcript: str = ""
    """Raw source transcript (ASR reference)."""
    translation: str = ""
    """Raw English translation (ST reference)."""

    def reference(self, task: str) -> str:
        return self.transcript if task == "asr" else self.translation


def manifest_path(data: str | os.PathLike, split: str) -> Path:
    """``data`` itself when it is a file, else ``<data>/<split>.tsv``; DataError when missing."""
    path = Path(data)
    if path.is_dir():
        path = path / f"{split}.tsv"
    if not path.is_file():
        raise DataError(f"{path}: manifest not found; point --data at a .tsv manifest or at the directory "
                        "'comsl prepare covost2' wrote")
    return path


def read_utterances(path: str | os.PathLike, langs: Iterable[str] | None = None) -> list[Utterance]:
    """Rows of a manifest (``comsl prepare`` format) as Utterances, optionally only ``langs``.

    Relative audio paths are taken relative to the manifest's directory. Raises DataError with
    ``file:line`` for malformed rows and when no row is left after the language filter.
    """
    from comsl.data.manifest import read_manifest

    path = Path(path)
    wanted = set(parse_langs(list(langs))) if langs else None
    out = []
    for row in read_manifest(str(path)):
        try:
            lang = normalize_lang(row["src_lang"])
        except ValueError as err:
            raise DataError(f"{path}: utterance {row['id']}: {err}") from err
        if wanted is not None and lang not in wanted:
            continue
        audio = Path(row["audio"])
        out.append(Utterance(
            id=row["id"], audio=str(audio if audio.is_absolute() else path.parent / audio), src_lang=lang,
            duration=float(row["duration"]), transcript=row["transcript"], translation=row["translation"],
        ))
    if not out:
        which = f" for languages {', '.join(sorted(wanted))}" if wanted else ""
        raise DataError(f"{path}: no utterances{which}")
    return out


class LockStep:
    """The ranks of the default process group decoding together: each takes every ``world_size``-th
    batch; ``self(done)`` (one all-reduce) is True once every rank says it is done."""

    def __init__(self, device: torch.device):
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.device = device if dist.get_backend() == "nccl" else torch.device("cpu")

    @classmethod
    def current(cls, device: torch.device) -> "LockStep | None":
        """A LockStep when more than one process takes part, else None (decode alone)."""
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            return cls(device)
        return None

    def __call__(self, done: bool) -> bool:
        flag = torch.tensor([1 if done else 0], dtype=torch.int32, device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item())

    def idle(self, _done: bool) -> bool:
        """``sync`` for a stand-in batch: this rank is done from the start."""
        return self(True)

    def rounds(self, batches: Sequence[list[int]]) -> Iterator[list[int] | None]:
        """This rank's batches, then None (run a stand-in) until the rank with the most is through."""
        mine = batches[self.rank:: self.world_size]
        for r in range(-(-len(batches) // self.world_size)):
            yield mine[r] if r < len(mine) else None

    def merge(self, hyps: dict[int, str]) -> dict[int, str]:
        """Every rank's ``{index: hypothesis}`` together."""
        return {i: text for share in self.gather(hyps) for i, text in share.items()}

    def gather(self, obj: Any) -> list[Any]:
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out


class Decoder:
    """Beam decoding with one ComSL model and its processor. Construction does no I/O.

    ``processor``: the model's ComSLProcessor, or its bare tokenizer (the front end then follows
    ``model.config``)."""

    def __init__(self, model, processor, config: DecodeConfig):
        from comsl.data.processor import ComSLProcessor

        config.validate()
        self.config = config
        if config.device is not None:
            model = model.to(torch.device(config.device))
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype  # 16 bit under DeepSpeed bf16/fp16
        self.model = model.eval()
        if not isinstance(processor, ComSLProcessor):
            processor = ComSLProcessor.for_model(model.config, processor)
        self.processor = processor
        self.max_samples = int(float(model.config.max_speech_seconds) * SAMPLING_RATE)
        self.model_dir: Path | None = None
        """Where the model was loaded from (set by ``from_checkpoint``)."""
        self.truncated: list[str] = []
        """Ids of utterances longer than the model accepts (decoded on their first max_speech_seconds)."""
        self.failed: list[str] = []
        """Ids of utterances whose audio could not be decoded (empty hypotheses)."""

    @classmethod
    def from_checkpoint(cls, checkpoint: str | os.PathLike, config: DecodeConfig) -> "Decoder":
        """Load the model and its processor from ``checkpoint`` (see comsl.run_layout.resolve_checkpoint)."""
        from comsl.models.composite import ComSLModel
        from comsl.run_layout import resolve_checkpoint

        model_dir = resolve_checkpoint(checkpoint)
        try:
            model = ComSLModel.from_pretrained(str(model_dir))
        except Exception as err:  # truncated weights (SafetensorError), a config.json missing fields, ...
            reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
            raise CheckpointError(f"{model_dir}: cannot load the ComSL model ({reason}); re-export it") from err
        if model.processor is None:
            raise CheckpointError(f"{model_dir}: model directory without its tokenizer (expected tokenizer.json "
                                  "or sentencepiece.bpe.model next to config.json)")
        device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
        decoder = cls(model, model.processor, replace(config, device=device))
        decoder.model_dir = model_dir
        return decoder

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    def _load(self, utt: Utterance) -> np.ndarray | None:
        """16 kHz mono audio of ``utt`` cut to the model's longest input; None (counted) when it fails."""
        from comsl.data.audio import load_audio

        try:
            wav = load_audio(utt.audio)
        except DataError as err:
            log.warning("utterance %s: %s; it gets an empty hypothesis", utt.id, err)
            self.failed.append(utt.id)
            return None
        if wav.shape[0] > self.max_samples:
            # Longer than the model accepts: decode the first max_speech_seconds (counted, reported).
            self.truncated.append(utt.id)
            wav = wav[: self.max_samples]
        return wav

    def _generate_kwargs(self) -> dict:
        cfg = self.config
        return dict(num_beams=cfg.beam, max_new_tokens=cfg.max_new_tokens, length_penalty=cfg.length_penalty)

    @torch.no_grad()
    def decode_waveforms(self, waves: Sequence[np.ndarray], src_langs: Sequence[str], sync=None) -> list[str]:
        """One batch: waveforms (each (S_i,), 16 kHz) and their CoVoST source codes -> hypotheses.

        ASR needs one source language per call (it is the forced first token). ``sync``: see
        ``comsl.models.beam_search``.
        """
        task, proc = self.config.task, self.processor
        if task == "asr" and len(set(src_langs)) > 1:
            raise ComSLError(f"ASR batch mixes languages {sorted(set(src_langs))}; decode one language per batch")
        speech, speech_mask = proc.features(waves, self.device)
        speech = speech.to(self.dtype)
        src_ids = torch.tensor([proc.lang_id(l) for l in src_langs], dtype=torch.long, device=self.device)
        tgt = proc.lang_id(src_langs[0]) if task == "asr" else proc.lang_id(TARGET_CODE)
        return proc.decode(self.model.generate_speech(speech, speech_mask, src_ids, tgt, sync=sync,
                                                      **self._generate_kwargs()))

    @torch.no_grad()
    def translate_texts(self, texts: Sequence[str], src_langs: Sequence[str]) -> list[str]:
        """MT: source-language texts (CoVoST codes ``src_langs``) -> English, in their order; longest
        first in batches of ``max_batch_size`` (shared by the ranks in lock-step, see the module doc)."""
        from comsl.data.batching import pad_ids

        proc = self.processor
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        step = self.config.max_batch_size
        batches = [order[start: start + step] for start in range(0, len(order), step)]
        sync = LockStep.current(self.device)
        hyps: dict[int, str] = {}
        for idx in (batches if sync is None else sync.rounds(batches)):
            # a rank without a batch keeps pace on a stand-in (an empty source sentence)
            pairs = [(texts[i], src_langs[i]) for i in idx] if idx else [("", src_langs[0])]
            ids, mask = pad_ids(proc.encode([t for t, _ in pairs], [l for _, l in pairs]), proc.pad_token_id)
            out = self.model.generate_text(ids.to(self.device), mask.to(self.device), proc.lang_id(TARGET_CODE),
                                           sync=None if sync is None else (sync if idx else sync.idle),
                                           **self._generate_kwargs())
            hyps.update(zip(idx or (), proc.decode(out)))
        if sync is not None:
            hyps = sync.merge(hyps)
        return [hyps[i] for i in range(len(texts))]

    def decode(
        self, utts: Sequence[Utterance], progress: bool = True, audio: Sequence[np.ndarray] | None = None
    ) -> list[str]:
        """Hypotheses for ``utts`` in their order. ``audio``: already loaded 16 kHz waveforms aligned
        with ``utts`` (else each file is loaded when its batch comes). Failed audio gives "" and is
        listed in ``self.failed``; more than ``max_failure_rate`` of them raises DataError naming the
        first few ids."""
        cfg = self.config
        keys = [u.src_lang for u in utts] if cfg.task == "asr" else None
        batches = longest_first_batches([u.duration * FRAMES_PER_SECOND for u in utts],
                                        max_frames=cfg.batch_seconds * FRAMES_PER_SECOND,
                                        max_batch_size=cfg.max_batch_size, keys=keys)
        sync = LockStep.current(self.device)
        hyps: dict[int, str] = {}
        bar = tqdm(total=len(utts), desc=f"decoding ({cfg.task}, beam {cfg.beam})", unit="utt",
                   disable=not progress)
        for batch in (batches if sync is None else sync.rounds(batches)):
            loaded = [(i, self._load(utts[i]) if audio is None else audio[i][: self.max_samples])
                      for i in batch or ()]
            loaded = [(i, w) for i, w in loaded if w is not None]
            if loaded:
                texts = self.decode_waveforms([w for _, w in loaded], [utts[i].src_lang for i, _ in loaded], sync)
                hyps.update((i, text) for (i, _), text in zip(loaded, texts))
            elif sync is not None:  # keep pace with the ranks that still decode
                stand_in = np.zeros(SAMPLING_RATE // 2, dtype=np.float32)
                self.decode_waveforms([stand_in], [utts[0].src_lang], sync.idle)
            bar.update(len(batch or ()))
        bar.close()
        if sync is not None:
            hyps = sync.merge(hyps)
            failures = sync.gather((self.failed, self.truncated))
            self.failed = [u for failed, _ in failures for u in failed]
            self.truncated = [u for _, truncated in failures for u in truncated]
        if len(self.failed) > cfg.max_failure_rate * len(utts):
            raise DataError(
                f"{len(self.failed)} of {len(utts)} audio files could not be decoded (limit "
                f"{cfg.max_failure_rate:.0%}), e.g. {', '.join(self.failed[:5])}; fix or re-prepare the data"
            )
        return [hyps.get(i, "") for i in range(len(utts))]


def file_utterances(paths: Sequence[str | os.PathLike], src_lang: str) -> list[Utterance]:
    """Utterances for audio files (duration from the header). Raises DataError for a missing file."""
    from comsl.data.audio import audio_info

    lang = normalize_lang(src_lang)
    out = []
    for p in paths:
        frames, sr = audio_info(p)
        out.append(Utterance(id=os.fspath(p), audio=os.fspath(p), src_lang=lang, duration=frames / max(sr, 1)))
    return out

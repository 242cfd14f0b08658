"""ComSLProcessor: what turns audio and text into a ComSL model's inputs and its outputs back into text.

It owns the speech front end (``comsl.data.features``), the tokenizer and the language codes, and is
saved with the model the way transformers saves processors: ``save_pretrained(dir)`` writes the
tokenizer files and ``processor_config.json``; ``from_pretrained(dir)`` reads them back.

The module is the one home of two conventions every part of the package shares:
- audio -> features: waveforms are right-padded with zeros into (B, S) and the front end maps them
  and their real lengths to features and a mask (``extract_features``: training batches and decoding);
- text -> ids: every sequence is ``[lang_code] pieces... </s>`` (``encode_texts``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from comsl.data.audio import SAMPLING_RATE
from comsl.data.features import build_frontend
from comsl.data.tokenizer import lang_id, load_tokenizer
from comsl.errors import CheckpointError, DataError

PROCESSOR_CONFIG = "processor_config.json"


def extract_features(frontend: nn.Module, waves: Sequence[np.ndarray | torch.Tensor],
                     device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad 16 kHz waveforms (each (S_i,)) into (B, max S_i), run ``frontend`` on ``device`` (the
    front end's own when None) without gradients -> features and mask (see comsl.data.features)."""
    lengths = torch.tensor([len(w) for w in waves], dtype=torch.long)
    padded = torch.zeros(len(waves), int(lengths.max()) if len(waves) else 0)
    for i, w in enumerate(waves):
        padded[i, : len(w)] = torch.as_tensor(w)
    if device is not None:
        padded, lengths = padded.to(device), lengths.to(device)
    with torch.no_grad():
        return frontend(padded, lengths)


def encode_texts(tokenizer, texts: Sequence[str], langs: Sequence[str]) -> list[list[int]]:
    """``[lang_code] pieces... </s>`` ids per text (what MBart50TokenizerFast gives with ``src_lang``),
    tokenised in one call. ``langs``: model or CoVoST codes, one per text. Built explicitly rather than
    through the tokenizer's mutable ``src_lang`` state. Raises DataError for an unknown language."""
    if len(texts) != len(langs):
        raise ValueError(f"{len(texts)} texts but {len(langs)} languages")
    pieces = tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []
    codes = {lang: lang_id(tokenizer, lang) for lang in set(langs)}
    return [[codes[lang], *p, tokenizer.eos_token_id] for p, lang in zip(pieces, langs)]


def encode(tokenizer, text: str, lang_code: str) -> list[int]:
    """``encode_texts`` for one text."""
    return encode_texts(tokenizer, [text], [lang_code])[0]


class ComSLProcessor:
    """Front end + tokenizer + language codes of one ComSL model. Construction does no I/O.

    ``speech_frontend``: whisper_log_mel | waveform | w2v_bert_fbank (``ComSLConfig.speech_frontend``);
    ``num_mel_bins``: mel bins of a Whisper front end.
    """

    def __init__(self, tokenizer, speech_frontend: str, num_mel_bins: int | None = None):
        self.tokenizer = tokenizer
        self.speech_frontend = speech_frontend
        self.num_mel_bins = num_mel_bins
        self.frontend = build_frontend(speech_frontend, n_mels=num_mel_bins or 80).eval()

    @classmethod
    def for_model(cls, config, tokenizer) -> "ComSLProcessor":
        """The processor of a model with ComSLConfig ``config`` and ``tokenizer``."""
        return cls(tokenizer, config.speech_frontend, config.num_mel_bins)

    # ------------------------------------------------------------------ inputs and outputs

    @property
    def pad_token_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    def lang_id(self, code: str) -> int:
        """Token id of a language code (model or CoVoST code, see comsl.data.tokenizer.lang_id)."""
        return lang_id(self.tokenizer, code)

    def features(self, waves: Sequence[np.ndarray | torch.Tensor], device: torch.device | str | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Waveforms (16 kHz, each (S_i,)) -> padded features and mask on ``device`` (extract_features)."""
        if device is not None:
            self.frontend.to(device)
        return extract_features(self.frontend, waves, device)

    def encode(self, texts: Sequence[str], langs: Sequence[str]) -> list[list[int]]:
        """``[lang_code] pieces... </s>`` per text (encode_texts)."""
        return encode_texts(self.tokenizer, texts, langs)

    def decode(self, ids: torch.Tensor | Sequence[Sequence[int]]) -> list[str]:
        """Generated ids -> texts without special tokens, whitespace collapsed."""
        return [" ".join(t.split()) for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]

    # ------------------------------------------------------------------ saved with the model

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write the tokenizer and ``processor_config.json`` into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(str(directory))
        config = {"processor_class": type(self).__name__, "speech_frontend": self.speech_frontend,
                  "num_mel_bins": self.num_mel_bins, "sampling_rate": SAMPLING_RATE}
        (directory / PROCESSOR_CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, *, speech_frontend: str | None = None,
                        num_mel_bins: int | None = None) -> "ComSLProcessor":
        """Load what ``save_pretrained`` wrote. ``speech_frontend``/``num_mel_bins`` (a model config's)
        stand in for a directory saved before processors were (it has only the tokenizer) and must
        agree with a saved ``processor_config.json``. Raises CheckpointError when the tokenizer is
        missing, the front end is unknown or disagrees, or the sampling rate is not 16 kHz."""
        directory = Path(directory)
        try:
            tokenizer = load_tokenizer(directory)
        except DataError as err:
            raise CheckpointError(f"{directory}: model directory without its tokenizer ({err})") from err
        path = directory / PROCESSOR_CONFIG
        saved = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        if saved.get("sampling_rate", SAMPLING_RATE) != SAMPLING_RATE:
            raise CheckpointError(f"{path}: sampling_rate {saved['sampling_rate']}, comsl reads audio at "
                                  f"{SAMPLING_RATE} Hz")
        given = {"speech_frontend": speech_frontend, "num_mel_bins": num_mel_bins}
        for key, value in given.items():
            if key in saved and speech_frontend is not None and saved[key] != value:
                raise CheckpointError(f"{path}: {key} {saved[key]!r} but the model's config.json says {value!r}")
        frontend = saved.get("speech_frontend", speech_frontend)
        if frontend is None:
            raise CheckpointError(f"{directory}: no {PROCESSOR_CONFIG}; pass speech_frontend (the model config's)")
        return cls(tokenizer, frontend, saved.get("num_mel_bins", num_mel_bins))

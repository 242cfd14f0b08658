"""Datasets over prepared manifests: speech (lazy audio decode, optional bounded cache) and text-only pairs.

Items are dicts: ``id``, ``src_lang`` (CoVoST code), ``src_lang_id``, ``transcript_ids`` and
``translation_ids`` (``[lang] tokens </s>``, see comsl.data.processor.encode_texts) and, for speech,
``audio`` (float32 (S,) at 16 kHz). A speech item whose audio fails to decode is returned as None
(the collator drops it); its id is logged and counted.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from comsl.data.audio import SAMPLING_RATE, load_audio
from comsl.data.manifest import read_manifest
from comsl.data.processor import encode_texts
from comsl.errors import DataError
from comsl.languages import TARGET_LANG
from comsl.lru import ByteLRU

log = logging.getLogger(__name__)


class TextPairDataset:
    """Transcript -> translation pairs (MT pre-finetuning), tokenised once on first use.

    ``entries``: manifest rows (dicts with ``id``, ``src_lang``, ``transcript``, ``translation``).
    """

    def __init__(self, entries: Sequence[dict], tokenizer):
        self.entries = list(entries)
        self.tokenizer = tokenizer
        self._encoded: list[tuple[list[int], list[int]]] | None = None

    @classmethod
    def from_manifest(cls, path: str, tokenizer, **kw):
        """Read a manifest TSV written by ``comsl prepare covost2``."""
        return cls(read_manifest(path), tokenizer, **kw)

    def __len__(self) -> int:
        return len(self.entries)

    def _encode_all(self) -> list[tuple[list[int], list[int]]]:
        if self._encoded is None:
            src = encode_texts(self.tokenizer, [e["transcript"] for e in self.entries],
                               [e["src_lang"] for e in self.entries])
            tgt = encode_texts(self.tokenizer, [e["translation"] for e in self.entries], [TARGET_LANG] * len(self.entries))
            self._encoded = list(zip(src, tgt))
        return self._encoded

    def token_lengths(self) -> np.ndarray:
        """(N,) max(transcript, translation) token count per item, for batching by tokens."""
        return np.array([max(len(s), len(t)) for s, t in self._encode_all()], dtype=np.int64)

    def drop_long_text(self, max_tokens: int) -> list[str]:
        """Remove items whose transcript or translation has more than ``max_tokens`` tokens (lang
        code and </s> included); returns and logs the removed ids so none is dropped silently."""
        lengths = self.token_lengths()
        keep = [i for i, n in enumerate(lengths) if n <= max_tokens]
        dropped = [self.entries[i]["id"] for i, n in enumerate(lengths) if n > max_tokens]
        if dropped:
            log.warning("dropping %d of %d utterances with more than %d tokens: %s", len(dropped),
                        len(self.entries), max_tokens, ", ".join(dropped[:10]) + (" ..." if len(dropped) > 10 else ""))
            encoded = self._encode_all()
            self.entries = [self.entries[i] for i in keep]
            self._encoded = [encoded[i] for i in keep]
        return dropped

    def text_item(self, i: int) -> dict:
        e = self.entries[i]
        src, tgt = self._encode_all()[i]
        return {"id": e["id"], "src_lang": e["src_lang"], "src_lang_id": src[0],
                "transcript_ids": src, "translation_ids": tgt}

    def __getitem__(self, i: int) -> dict:
        return self.text_item(i)


class SpeechDataset(TextPairDataset):
    """Manifest rows with audio decoded lazily at 16 kHz.

    ``cache_bytes``: budget of an LRU of decoded waveforms (per process: each DataLoader worker holds
    its own); 0 decodes every time, so memory does not grow with the corpus. ``max_fail_fraction``: when
    more than this fraction of the dataset has failed to decode, raise DataError instead of skipping (a
    systematic problem, not a bad clip).
    """

    def __init__(self, entries: Sequence[dict], tokenizer, *, cache_bytes: int = 0,
                 max_fail_fraction: float = 0.01):
        super().__init__(entries, tokenizer)
        self.max_fail_fraction = max_fail_fraction
        self.waves = ByteLRU(cache_bytes)
        """Decoded waveforms keyed by utterance id (ids survive ``drop_long_text``, indices do not)."""
        self.failed: dict[str, str] = {}  # id -> error, utterances skipped at run time

    def audio_lengths(self) -> np.ndarray:
        """(N,) samples at 16 kHz per item, from the manifest (no decoding)."""
        return np.array([int(e["n_samples"]) for e in self.entries], dtype=np.int64)

    def __getitem__(self, i: int) -> dict | None:
        e = self.entries[i]
        if e["id"] in self.failed:
            return None
        wav = self.waves.get(e["id"])
        if wav is None:
            try:
                wav = load_audio(e["audio"], SAMPLING_RATE)
            except DataError as err:
                self._record_failure(e["id"], str(err))
                return None
            self.waves.put(e["id"], wav)
        item = self.text_item(i)
        item["audio"] = wav
        return item

    def _record_failure(self, utt_id: str, error: str) -> None:
        self.failed[utt_id] = error
        log.warning("skipping utterance %s: %s", utt_id, error)
        if len(self.failed) > self.max_fail_fraction * len(self.entries):
            raise DataError(
                f"{len(self.failed)} of {len(self.entries)} utterances failed to decode, more than "
                f"max_fail_fraction={self.max_fail_fraction}; last: {utt_id}: {error}. Re-run "
                "'comsl prepare covost2' (it validates every clip) or check the audio paths"
            )

"""Dev BLEU during training: the trainer's ``evaluate_fn(model) -> {"bleu": {lang: x}, "avg": x}``.

Scored exactly like ``comsl evaluate`` (corpus sacreBLEU on raw references, Avg over languages) on a
fixed, deterministic subset of a manifest, with audio loaded once up front. Called on every rank of a
distributed run: the ranks share the decoding in lock-step (``comsl.evaluation.decode.LockStep``, needed
under ZeRO-3) and all return the same scores.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Iterable, Self, Sequence

import numpy as np

from comsl.evaluation.decode import DecodeConfig, Decoder, Utterance, read_utterances
from comsl.evaluation.scoring import score_languages


class _ManifestEvaluator:
    """What both dev evaluators share: a fixed subset of a manifest, decoded by ``Decoder`` on the model's
    own device and scored by ``dev_scores``. Subclasses say how the hypotheses are made."""

    def __init__(self, utts: Sequence[Utterance], tokenizer, config: DecodeConfig):
        self.utts = list(utts)
        self.tokenizer = tokenizer
        # The model stays on its training device.
        self.config = replace(config, device=None)
        self.config.validate()

    @classmethod
    def from_manifest(
        cls, manifest: str | os.PathLike, tokenizer, config: DecodeConfig | None = None,
        langs: Iterable[str] | None = None, per_language: int | None = None,
    ) -> Self:
        """Read ``manifest`` (optionally only ``langs`` and the first ``per_language`` utterances of each)
        and load what decoding needs. Greedy decoding (beam 1) by default: dev BLEU is for tracking, not
        reporting."""
        utts = _first_per_language(read_utterances(manifest, langs), per_language)
        return cls._from_utterances(utts, tokenizer, config or DecodeConfig(beam=1))

    @classmethod
    def _from_utterances(cls, utts: list[Utterance], tokenizer, config: DecodeConfig) -> Self:
        return cls(utts, tokenizer, config)

    def __call__(self, model) -> dict:
        hyps = self._hypotheses(Decoder(model, self.tokenizer, self.config))
        return dev_scores(self.utts, hyps, self.config.task)

    def _hypotheses(self, decoder: Decoder) -> list[str]:
        raise NotImplementedError


class DevEvaluator(_ManifestEvaluator):
    """Callable ``(model) -> {"bleu", "chrf", "avg", "groups"}`` of the speech task (``config.task``).
    Construction does no I/O; ``from_manifest`` reads the manifest and loads the audio once."""

    def __init__(self, utts: Sequence[Utterance], audio: Sequence[np.ndarray], tokenizer, config: DecodeConfig):
        super().__init__(utts, tokenizer, config)
        self.audio = list(audio)

    @classmethod
    def _from_utterances(cls, utts: list[Utterance], tokenizer, config: DecodeConfig) -> Self:
        from comsl.data.audio import load_audio

        return cls(utts, [load_audio(u.audio) for u in utts], tokenizer, config)

    def _hypotheses(self, decoder: Decoder) -> list[str]:
        return decoder.decode(self.utts, progress=False, audio=self.audio)


class TextDevEvaluator(_ManifestEvaluator):
    """Dev BLEU of the MT task (stage 1): transcript -> English with ``generate_text``, scored like
    ``DevEvaluator``. Construction does no I/O; use ``from_manifest``."""

    def __init__(self, utts: Sequence[Utterance], tokenizer, config: DecodeConfig):
        super().__init__(utts, tokenizer, replace(config, task="st"))

    def _hypotheses(self, decoder: Decoder) -> list[str]:
        return decoder.translate_texts([u.transcript for u in self.utts], [u.src_lang for u in self.utts])


def dev_scores(utts: Sequence[Utterance], hyps: Sequence[str], task: str) -> dict:
    """The trainer's ``evaluate_fn`` result for hypotheses aligned with ``utts``: BLEU/chrF per language,
    the paper's groups, and ``avg`` (scored exactly like ``comsl evaluate``)."""
    from comsl.evaluation.evaluate import group_by_lang

    scores = score_languages(group_by_lang(utts, hyps), group_by_lang(utts, [u.reference(task) for u in utts]), task)
    return {"bleu": scores.bleu, "chrf": scores.chrf, "avg": scores.groups["Avg"], "groups": scores.groups}


def _first_per_language(utts: Sequence[Utterance], per_language: int | None) -> list[Utterance]:
    """The first ``per_language`` utterances of each language, in manifest order (all when None)."""
    if per_language is None:
        return list(utts)
    seen: dict[str, int] = {}
    kept = []
    for u in utts:
        if seen.get(u.src_lang, 0) < per_language:
            seen[u.src_lang] = seen.get(u.src_lang, 0) + 1
            kept.append(u)
    return kept

"""The ``whisper_zero_shot`` baseline: X->En speech translation with an unmodified Whisper.

Whisper decodes its own 30 s log-mel windows (``WhisperFeatureExtractor`` pads every utterance to
30 s), with the prompt ``<|startoftranscript|><|xx|><|translate|><|notimestamps|>``, beam search
and a length cap, in batches that mix languages (one language token per utterance). Its encoder on
the 30 s window is nearly all of the cost (~44 G multiply-adds per utterance for Whisper-base, whatever
the utterance's length), which batching cannot remove without changing the outputs. The model directory is any Hugging Face Whisper, e.g. the output of
``comsl fetch whisper-base``.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from comsl.data.audio import SAMPLING_RATE
from comsl.errors import CheckpointError, DataError
from comsl.languages import base_code

_PROMPT_LEN = 4  # <|startoftranscript|> <|xx|> <|translate|> <|notimestamps|>


def whisper_language(covost_lang: str) -> str:
    """Whisper's language code for a CoVoST code: the part before the region (``zh-CN`` -> ``zh``,
    ``sv-SE`` -> ``sv``); codes without a region are already Whisper codes (``fr``, ``cy``)."""
    return base_code(covost_lang)


def _load(model_dir: Path, device: str, dtype: torch.dtype):
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizer

    if not (model_dir / "config.json").is_file():
        raise CheckpointError(f"{model_dir}: no config.json; expected a Hugging Face Whisper directory "
                              "(e.g. from `comsl fetch whisper-base`)")
    model = WhisperForConditionalGeneration.from_pretrained(model_dir, dtype=dtype).to(device).eval()
    return model, WhisperFeatureExtractor.from_pretrained(model_dir), WhisperTokenizer.from_pretrained(model_dir)


@torch.no_grad()
def whisper_zero_shot(
    model_dir: str | Path,
    waveforms_by_lang: dict[str, list[np.ndarray]],
    beam: int = 5,
    batch_size: int = 16,
    max_new_tokens: int = 128,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> dict[str, list[str]]:
    """Translate every utterance to English with Whisper's own ``translate`` task.

    Args:
        model_dir: Hugging Face Whisper directory.
        waveforms_by_lang: CoVoST language code -> mono 16 kHz waveforms, each a 1-D array (S,) of at
            most 30 s (Whisper's window; longer input would be cut, so it is rejected).
        beam: beam size.
        batch_size: utterances per ``generate`` call, languages mixed (outputs do not depend on it).
        max_new_tokens: cap on generated tokens per utterance (TTS speech can make Whisper loop).
        device: torch device.
        dtype: weights and features dtype (``torch.bfloat16`` runs the 30 s encoder on bf16 matrix units;
            hypotheses can then differ from float32 ones, as they do between GPU fp16 and fp32 runs).

    Returns:
        Same keys, the English hypotheses in input order (leading/trailing spaces stripped).

    Raises:
        CheckpointError: ``model_dir`` is not a Whisper directory.
        DataError: a language Whisper does not know, or a waveform that is not 1-D, empty or over 30 s.
    """
    from transformers import GenerationMixin

    model_dir = Path(model_dir)
    model, feature_extractor, tokenizer = _load(model_dir, device, dtype)
    items = _checked_items(model, model_dir, waveforms_by_lang, feature_extractor.n_samples)
    gen = _generation_config(model, beam, max_new_tokens)
    results: dict[str, list[str]] = {lang: [""] * len(w) for lang, w in waveforms_by_lang.items()}
    # One pass over all languages: Whisper takes one language token per utterance, so batches stay full.
    for start in tqdm(range(0, len(items), batch_size), desc="whisper X->en", unit="batch",
                      disable=len(items) <= batch_size):
        batch = items[start: start + batch_size]
        features = feature_extractor([np.asarray(w, dtype=np.float32) for _, _, w in batch],
                                     sampling_rate=SAMPLING_RATE, return_tensors="pt").input_features.to(device, dtype)
        # GenerationMixin's generate, not Whisper's override: the override (long-form, temperature fallback,
        # timestamps; none used here) hands its own config plus suppress-token kwargs to the generic generate,
        # which logs a deprecation warning whatever the caller passes (transformers 5.24).
        out = GenerationMixin.generate(
            model, features, generation_config=gen, decoder_input_ids=_prompts(gen, [lang for lang, _, _ in batch],
                                                                                device),
            attention_mask=torch.ones(features.shape[0], features.shape[-1], dtype=torch.long, device=device))
        for (lang, i, _), text in zip(batch, tokenizer.batch_decode(out, skip_special_tokens=True)):
            results[lang][i] = text.strip()
    return results


def _checked_items(model, model_dir: Path, waveforms_by_lang: dict[str, list[np.ndarray]],
                   max_samples: int) -> list[tuple[str, int, np.ndarray]]:
    """(language, index, waveform) of every utterance, languages in input order; DataError naming the
    first unknown language or bad waveform."""
    items = []
    for lang, waveforms in waveforms_by_lang.items():
        code = whisper_language(lang)
        if f"<|{code}|>" not in model.generation_config.lang_to_id:
            raise DataError(f"language '{lang}' (Whisper code '{code}') is not one of {model_dir}'s languages")
        for i, wav in enumerate(waveforms):
            if wav.ndim != 1 or wav.size == 0 or wav.size > max_samples:
                raise DataError(
                    f"{lang} utterance #{i}: expected a non-empty 1-D 16 kHz waveform of at most "
                    f"{max_samples / SAMPLING_RATE:.0f} s, got shape {wav.shape}"
                )
            items.append((lang, i, wav))
    return items


def _prompts(gen, langs: list[str], device: str) -> torch.Tensor:
    """(B, 4) ``<|startoftranscript|><|xx|><|translate|><|notimestamps|>``, the prompt Whisper's generate
    builds for ``language=xx, task="translate"`` without timestamps."""
    return torch.tensor([[gen.decoder_start_token_id, gen.lang_to_id[f"<|{whisper_language(lang)}|>"],
                          gen.task_to_id["translate"], gen.no_timestamps_token_id] for lang in langs],
                        dtype=torch.long, device=device)


def _generation_config(model, beam: int, max_new_tokens: int):
    """The model's generation config with our beam, length cap and timestamp suppression."""
    gen = copy.deepcopy(model.generation_config)
    # The prompt asks for no timestamps; Whisper's own generate suppresses them then, and so do we.
    timestamps = range(gen.no_timestamps_token_id + 1, model.config.vocab_size)
    gen.suppress_tokens = sorted(set(gen.suppress_tokens or []) | set(timestamps))
    gen.num_beams = beam
    # The cap as max_length (prompt included): max_new_tokens next to the checkpoint's max_length (448)
    # makes generate warn on every call.
    gen.max_new_tokens = None
    gen.max_length = _PROMPT_LEN + min(max_new_tokens, model.config.max_target_positions - _PROMPT_LEN)
    return gen


__all__ = ["whisper_language", "whisper_zero_shot"]

"""Speech for the mini corpus: espeak-ng reads each sentence (zh-CN as tone-numbered pinyin with voice
``cmn-latn-pinyin``, ja from kana); clips are resampled to 48 kHz and written as mp3, as Common Voice's."""

from __future__ import annotations

import io
import subprocess
import unicodedata

import numpy as np
import soundfile as sf
import soxr

from mini.catalogs import LANG_SOURCES

CLIP_RATE = 48000  # Common Voice clips are 48 kHz mp3

_KAKASI = None
_CJK_PUNCT = str.maketrans({"。": ". ", "、": ", ", "「": " ", "」": " ", "『": " ", "』": " ", "・": " "})


def tts_text(lang: str, text: str) -> str:
    """What espeak-ng is given: tone-numbered pinyin for zh-CN, hiragana for ja, else the text."""
    if lang == "zh-CN":
        from pypinyin import Style, lazy_pinyin

        syllables = lazy_pinyin(text, style=Style.TONE3, neutral_tone_with_five=True)
        return " ".join(unicodedata.normalize("NFKC", s.translate(_CJK_PUNCT)) for s in syllables)
    if lang == "ja":
        global _KAKASI
        if _KAKASI is None:
            import pykakasi

            _KAKASI = pykakasi.kakasi()
        return " ".join(unicodedata.normalize("NFKC", t["hira"].translate(_CJK_PUNCT))
                        for t in _KAKASI.convert(text))
    return text


def synthesize(job: tuple[str, str, str, int, int]) -> tuple[int, str]:
    """(lang, text, mp3 path, speed, gap) -> (samples at 48 kHz, error or ""). Runs in workers."""
    lang, text, path, speed, gap = job
    voice = LANG_SOURCES[lang][2]
    try:
        proc = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-g", str(gap), "--stdout", "-b", "1"],
                              input=tts_text(lang, text).encode("utf-8"), capture_output=True, timeout=60, check=True)
        wav, sr = sf.read(io.BytesIO(proc.stdout), dtype="float32")
    except (subprocess.SubprocessError, OSError, RuntimeError) as err:
        return 0, f"espeak-ng failed: {err}"
    if wav.ndim > 1:
        wav = wav.mean(axis=1)
    wav = soxr.resample(wav, sr, CLIP_RATE).astype(np.float32)
    peak = float(np.abs(wav).max()) if wav.size else 0.0
    if peak > 0.99:
        wav *= 0.99 / peak  # soxr can overshoot slightly; mp3 encoding would clip
    sf.write(path, wav, CLIP_RATE, format="MP3")
    return len(wav), ""

"""Audio decoding: any format libsndfile reads (mp3, flac, wav, ogg) -> 16 kHz mono float32."""

from __future__ import annotations

import os

import numpy as np
import soundfile as sf
import soxr

from comsl.errors import DataError

SAMPLING_RATE = 16000


def load_audio(path: str | os.PathLike, sampling_rate: int = SAMPLING_RATE) -> np.ndarray:
    """Decode ``path``, down-mix to mono and resample to ``sampling_rate`` with soxr.

    Returns a float32 array of shape (S,). Raises DataError naming the file when it is
    missing, cannot be decoded, or holds no samples.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: audio file not found")
    try:
        audio, sr = sf.read(path, dtype="float32", always_2d=True)
    except Exception as err:  # libsndfile raises several types (LibsndfileError, RuntimeError, ...)
        raise DataError(f"{path}: cannot decode audio ({err})") from err
    if audio.shape[0] == 0:
        raise DataError(f"{path}: audio file holds no samples")
    wav = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
    if sr != sampling_rate:
        wav = soxr.resample(wav, sr, sampling_rate)
    wav = np.ascontiguousarray(wav, dtype=np.float32)
    if wav.shape[0] == 0:
        raise DataError(f"{path}: audio is empty after resampling to {sampling_rate} Hz")
    if not np.isfinite(wav).all():
        raise DataError(f"{path}: decoded audio contains NaN or inf samples")
    return wav


def audio_info(path: str | os.PathLike) -> tuple[int, int]:
    """(frames, sampling rate) from the file header without decoding; mp3 headers may be inexact.

    Raises DataError naming the file when it is missing or unreadable.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: audio file not found")
    try:
        info = sf.info(path)
    except Exception as err:
        raise DataError(f"{path}: cannot read audio header ({err})") from err
    return int(info.frames), int(info.samplerate)


def num_samples_at(n_frames: int, orig_sr: int, sampling_rate: int = SAMPLING_RATE) -> int:
    """Number of samples soxr produces when resampling ``n_frames`` from ``orig_sr``."""
    if orig_sr == sampling_rate:
        return n_frames
    return int(round(n_frames * sampling_rate / orig_sr))

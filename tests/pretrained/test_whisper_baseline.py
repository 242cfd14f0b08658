import json
import shutil

import numpy as np
import pytest

from comsl.errors import CheckpointError, DataError
from comsl.evaluation.whisper_baseline import whisper_language, whisper_zero_shot


def test_covost_codes_map_to_whisper_codes():
    assert [whisper_language(c) for c in ("zh-CN", "sv-SE", "fr", "cy", "ca")] == ["zh", "sv", "fr", "cy", "ca"]


def _waves(n, seed):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(int(16000 * (0.5 + 0.3 * i))).astype(np.float32) * 0.1 for i in range(n)]


def _one_by_one(model_dir, inputs, beam, max_new_tokens):
    """The reference: each utterance alone through transformers' generate, as the baseline decoded before."""
    import torch
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizer

    model = WhisperForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
    fe, tok = WhisperFeatureExtractor.from_pretrained(model_dir), WhisperTokenizer.from_pretrained(model_dir)
    gen = model.generation_config
    suppress = sorted(set(gen.suppress_tokens or []) | set(range(gen.no_timestamps_token_id + 1, model.config.vocab_size)))
    out = {}
    for lang, waves in inputs.items():
        out[lang] = []
        for w in waves:
            features = fe([w], sampling_rate=16000, return_tensors="pt").input_features
            with torch.no_grad():
                ids = model.generate(features, language=whisper_language(lang), task="translate", num_beams=beam,
                                     max_new_tokens=max_new_tokens, suppress_tokens=suppress)
            out[lang].append(tok.batch_decode(ids, skip_special_tokens=True)[0].strip())
    return out


@pytest.fixture(scope="module")
def talkative_hf(tiny_hf, tmp_path_factory):
    """tiny_hf that can emit letters only (no <|endoftext|>, no other special token): a random tiny Whisper
    otherwise emits nothing readable, and empty outputs would make every comparison below vacuous."""
    out = tmp_path_factory.mktemp("talkative")
    shutil.copytree(tiny_hf, out, dirs_exist_ok=True)
    gen = json.loads((out / "generation_config.json").read_text())
    vocab = json.loads((out / "config.json").read_text())["vocab_size"]
    gen["suppress_tokens"] = sorted(set(gen.get("suppress_tokens") or []) | set(range(27, vocab)))  # 27 letters
    (out / "generation_config.json").write_text(json.dumps(gen))
    return out


@pytest.mark.parametrize("beam", [1, 2])
def test_zero_shot_batched_across_languages_equals_one_by_one(talkative_hf, beam, monkeypatch):
    from transformers import WhisperForConditionalGeneration

    rng = np.random.default_rng(0)
    # loud noise makes this random Whisper say something else, so a misplaced output shows
    waves = [rng.standard_normal(8000 + 800 * i).astype(np.float32) * scale for i, scale in enumerate((5.0, 0.1, 20.0))]
    inputs = {"fr": waves[:2], "zh-CN": waves[1:3], "de": waves[2:3]}
    languages, real = [], WhisperForConditionalGeneration.generate
    monkeypatch.setattr(WhisperForConditionalGeneration, "generate",
                        lambda self, *a, **kw: languages.append(kw["language"]) or real(self, *a, **kw))
    batched = whisper_zero_shot(talkative_hf, inputs, beam=beam, batch_size=4, max_new_tokens=4)
    assert languages == [["fr", "fr", "zh", "zh"], ["de"]]  # full batches mixing languages
    monkeypatch.setattr(WhisperForConditionalGeneration, "generate", real)
    assert list(batched) == ["fr", "zh-CN", "de"] and [len(v) for v in batched.values()] == [2, 2, 1]
    assert batched == _one_by_one(talkative_hf, inputs, beam, 4)
    # letters and the space only, 4 tokens each, and not all alike
    hyps = [h for v in batched.values() for h in v]
    assert all(set(h) <= set("abcdefghijklmnopqrstuvwxyz ") and 0 < len(h) <= 4 for h in hyps)
    assert batched["fr"][0] != batched["fr"][1] and batched["zh-CN"][0] != batched["zh-CN"][1]


def test_bad_inputs_are_named(tiny_hf, tmp_path):
    with pytest.raises(DataError, match="language 'ja' \\(Whisper code 'ja'\\) is not one of"):
        whisper_zero_shot(tiny_hf, {"ja": _waves(1, 0)})
    with pytest.raises(DataError, match="fr utterance #1: .* at most 30 s, got shape \\(480001,\\)"):
        whisper_zero_shot(tiny_hf, {"fr": [np.zeros(100, np.float32), np.zeros(480001, np.float32)]})
    with pytest.raises(DataError, match="de utterance #0: .*got shape \\(2, 100\\)"):
        whisper_zero_shot(tiny_hf, {"de": [np.zeros((2, 100), np.float32)]})
    with pytest.raises(CheckpointError, match="no config.json"):
        whisper_zero_shot(tmp_path, {"fr": _waves(1, 0)})
